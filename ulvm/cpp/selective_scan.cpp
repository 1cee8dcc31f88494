// The selective scan as one fused C++ loop for CPU inference: backend "cpp" (ulvm/ssm/cpu_scan.py calls it,
// ulvm/cpp/__init__.py builds it). The twin of mamba-ssm's selective_scan_fwd, forward only, fp32 and fp64.
//
// Glossary (as in ulvm/ssm/scan.py): batch b, inner channels E (index d), sequence length L (index t),
// state size N (index n).
//   u (b, E, L) input, delta (b, E, L) step size before bias/softplus, A (E, N), B and C (b, N, L),
//   D (E) skip, z (b, E, L) gate, delta_bias (E).
//   Δ_t = softplus(delta_t + bias);  h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t h_t + D u_t;
//   out_t = y_t · silu(z_t).
//
// Why a loop and not the closed forms of "parallel" or "chunked": on a CPU the scan is small (~1.6M state
// updates for a 256² image) and those forms spend their time building (b, E, L, N) tensors. Here h stays in
// registers; the N state updates of a step are one SIMD loop (the exponentials from the vector maths
// library, hence -ffast-math), and everything that does not depend on h is computed a row at a time
// before and after the recurrence, also vectorised. Rows (b, d) are independent: at::parallel_for.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

// B and C are read time-major, (b, L, N) with n contiguous, from any strides of b and t (as `x_proj` leaves
// them: no copy); z from any strides of b and d.
struct TimeMajor {
  int64_t batch_stride, step_stride;
};

template <typename T>
void scan_rows(const T* u, const T* delta, const T* A, const T* B_t_major, const T* C_t_major, TimeMajor B_strides,
               TimeMajor C_strides, const T* D, const T* z, int64_t z_batch_stride, int64_t z_channel_stride,
               const T* delta_bias, bool delta_softplus, T* out, int64_t batch, int64_t E, int64_t L, int64_t N) {
  at::parallel_for(0, batch * E, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> h(N), a(N), dt(L), dt_u(L), gate(L);
    for (int64_t row = begin; row < end; ++row) {          // row = (b, d)
      const int64_t b = row / E, d = row % E;
      const T* u_row = u + row * L;
      const T* delta_row = delta + row * L;
      const T* B_b = B_t_major + b * B_strides.batch_stride;   // (L, N): a step's N values side by side
      const T* C_b = C_t_major + b * C_strides.batch_stride;
      const T bias = delta_bias ? delta_bias[d] : T(0);
      for (int64_t n = 0; n < N; ++n) { h[n] = T(0); a[n] = A[d * N + n]; }   // h_0 = 0
      for (int64_t t = 0; t < L; ++t) {                    // Δ_t and Δ_t u_t (softplus as F.softplus)
        const T x = delta_row[t] + bias;
        dt[t] = delta_softplus ? (x > T(20) ? x : std::log1p(std::exp(x))) : x;
        dt_u[t] = dt[t] * u_row[t];
      }
      T* y = out + row * L;
      T* hp = h.data();
      const T* ap = a.data();
      for (int64_t t = 0; t < L; ++t) {                    // the recurrence: only this loop is sequential
        const T* B_t = B_b + t * B_strides.step_stride;
        const T* C_t = C_b + t * C_strides.step_stride;
        const T dt_t = dt[t], dt_u_t = dt_u[t];
        T y_t = T(0);
#pragma omp simd reduction(+ : y_t)
        for (int64_t n = 0; n < N; ++n) {
          hp[n] = std::exp(dt_t * ap[n]) * hp[n] + dt_u_t * B_t[n];   // h_t = Ā_t h_{t-1} + B̄_t u_t
          y_t += C_t[n] * hp[n];                                      // y_t = C_t h_t
        }
        y[t] = y_t;
      }
      const T skip = D ? D[d] : T(0);
      if (z) {
        const T* z_row = z + b * z_batch_stride + d * z_channel_stride;
        for (int64_t t = 0; t < L; ++t) {
          gate[t] = z_row[t] / (T(1) + std::exp(-z_row[t]));          // silu(z_t)
        }
        for (int64_t t = 0; t < L; ++t) y[t] = (y[t] + skip * u_row[t]) * gate[t];
      } else {
        for (int64_t t = 0; t < L; ++t) y[t] += skip * u_row[t];
      }
    }
  });
}

at::Tensor selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                          const at::Tensor& C, const std::optional<at::Tensor>& D, const std::optional<at::Tensor>& z,
                          const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  TORCH_CHECK(u.dim() == 3 && B.dim() == 3 && A.dim() == 2, "selective_scan: u (b, E, L), A (E, N), B/C (b, N, L)");
  const auto dtype = u.scalar_type();
  auto as_input = [&](const at::Tensor& t) { return t.to(dtype).contiguous(); };
  auto last_dim_contiguous = [&](const at::Tensor& t) {      // a copy only where the last dim is strided
    const at::Tensor typed = t.to(dtype);
    return typed.stride(-1) == 1 ? typed : typed.contiguous();
  };
  const at::Tensor u_c = as_input(u), delta_c = as_input(delta), A_c = as_input(A);
  const at::Tensor B_t = last_dim_contiguous(B.transpose(1, 2)), C_t = last_dim_contiguous(C.transpose(1, 2));
  const at::Tensor D_c = D ? as_input(*D) : at::Tensor(), z_c = z ? last_dim_contiguous(*z) : at::Tensor();
  const at::Tensor bias_c = delta_bias ? as_input(*delta_bias) : at::Tensor();
  at::Tensor out = at::empty_like(u_c);
  AT_DISPATCH_FLOATING_TYPES(dtype, "ulvm::selective_scan", [&] {
    scan_rows<scalar_t>(u_c.data_ptr<scalar_t>(), delta_c.data_ptr<scalar_t>(), A_c.data_ptr<scalar_t>(),
                        B_t.data_ptr<scalar_t>(), C_t.data_ptr<scalar_t>(), {B_t.stride(0), B_t.stride(1)},
                        {C_t.stride(0), C_t.stride(1)}, D ? D_c.data_ptr<scalar_t>() : nullptr,
                        z ? z_c.data_ptr<scalar_t>() : nullptr, z ? z_c.stride(0) : 0, z ? z_c.stride(1) : 0,
                        delta_bias ? bias_c.data_ptr<scalar_t>() : nullptr, delta_softplus,
                        out.data_ptr<scalar_t>(), u.size(0), u.size(1), u.size(2), A.size(1));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ulvm, m) {        // a fragment: each source of the library defines its own operators
  m.def("selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
        "Tensor? delta_bias, bool delta_softplus) -> Tensor");
}

TORCH_LIBRARY_IMPL(ulvm, CPU, m) {
  m.impl("selective_scan", &selective_scan);
}
