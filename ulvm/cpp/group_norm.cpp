// Group normalisation of NCHW or channels-last maps, for CPU inference (ulvm/cpp/__init__.py builds it; the .pt2
// export swaps it into the model's nn.GroupNorm layers). Forward only, fp32 and fp64: what F.group_norm computes.
//
// Why: Inductor runs the model's convolutions channels-last (oneDNN's layout), where a group is a few adjacent
// channels of every pixel. For the first stage's 8 channels at 256² (groups of 2), the code it generates
// reduces one group at a time with masked 2-wide vector loads, a slow part of the .pt2 package (its profile and
// the gain of this operator are in book/results/bench/NOTES.md). This operator keeps the layout it is given, so
// a model exported channels-last stays channels-last around it.
//
// Glossary: batch b, channel c (C of them) in group g = c / (C / G) (G groups), pixel p (P = H · W), x (b, C, H, W)
// channels-last (x[b, p, c]) or NCHW (x[b, c, p]), weight γ (C), bias β (C);
//   μ_g = mean over (p, c in g) of x,   σ²_g = mean over (p, c in g) of (x − μ_g)²   (in double),
//   out[b, c, p] = (x[b, c, p] − μ_g) / √(σ²_g + ε) · γ[c] + β[c] = x · scale[c] + shift[c],   in x's layout.
// Two reads of the image, each along memory (one SIMD loop): shifted sums and sums of squares for μ_g and σ²_g,
// then the affine map (reading the mean before the squares would take a third pass). The pixels are cut into a fixed number of parts (at::parallel_for), so the partial sums, and the result,
// do not depend on the number of threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kParts = 64;                 // pixel ranges summed separately, then added in order
constexpr int64_t kValuesPerTask = 1 << 15;   // the fewest values worth a thread of their own

// Where value (p, c) of an image lies: x[p · C + c] channels-last, x[c · P + p] contiguous (NCHW).
struct Layout {
  int64_t pixels, channels;
  bool channels_last;
  int64_t at(int64_t p, int64_t c) const { return channels_last ? p * channels + c : c * pixels + p; }
};

// Per channel c, over the image's pixels p, in double: S[c] = Σ (x[p, c] − K[c]) and Q[c] = Σ (x[p, c] − K[c])²,
// shifted by the channel's first value K[c] = x[0, c] so that Q does not lose the variance to cancellation when
// the mean is large. One read of the image; part by part in a fixed order. The inner loop runs along memory:
// over a pixel's channels channels-last, along a channel's pixels in NCHW. Parts run on several threads only
// when each thread gets at least kValuesPerTask values: small maps stay on the calling thread.
struct ShiftedSums {
  std::vector<double> reference, sum, square;
};

template <typename T>
ShiftedSums shifted_sums(const T* x, const Layout& l) {
  const int64_t parts = std::min(kParts, l.pixels), step = (l.pixels + parts - 1) / parts;
  ShiftedSums out{std::vector<double>(l.channels), std::vector<double>(l.channels, 0.0),
                  std::vector<double>(l.channels, 0.0)};
  for (int64_t c = 0; c < l.channels; ++c) out.reference[c] = static_cast<double>(x[l.at(0, c)]);
  const double* k = out.reference.data();
  std::vector<double> partial(2 * parts * l.channels, 0.0);   // per part: C sums, then C squares
  const int64_t grain = std::max<int64_t>(1, kValuesPerTask / (step * l.channels));
  at::parallel_for(0, parts, grain, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      double* sums = partial.data() + 2 * part * l.channels;
      double* squares = sums + l.channels;
      const int64_t first = part * step, last = std::min(l.pixels, (part + 1) * step);
      if (l.channels_last) {
        for (int64_t p = first; p < last; ++p) {
#pragma omp simd
          for (int64_t c = 0; c < l.channels; ++c) {
            const double d = static_cast<double>(x[p * l.channels + c]) - k[c];
            sums[c] += d;
            squares[c] += d * d;
          }
        }
      } else {
        for (int64_t c = 0; c < l.channels; ++c) {
          double sum = 0.0, square = 0.0;
#pragma omp simd reduction(+ : sum, square)
          for (int64_t p = first; p < last; ++p) {
            const double d = static_cast<double>(x[c * l.pixels + p]) - k[c];
            sum += d;
            square += d * d;
          }
          sums[c] += sum;
          squares[c] += square;
        }
      }
    }
  });
  for (int64_t part = 0; part < parts; ++part)
    for (int64_t c = 0; c < l.channels; ++c) {
      out.sum[c] += partial[2 * part * l.channels + c];
      out.square[c] += partial[(2 * part + 1) * l.channels + c];
    }
  return out;
}

template <typename T>
void group_norm_image(const T* x, const T* weight, const T* bias, T* out, const Layout& l, int64_t groups,
                      double eps) {
  const int64_t per_group = l.channels / groups;
  const double pixels = static_cast<double>(l.pixels), count = pixels * per_group;
  const ShiftedSums s = shifted_sums(x, l);
  std::vector<T> scale(l.channels), shift(l.channels);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t first = g * per_group, last = (g + 1) * per_group;
    double total = 0.0;                                  // μ_g = Σ_c (S[c] + P · K[c]) / N
    for (int64_t c = first; c < last; ++c) total += s.sum[c] + pixels * s.reference[c];
    const double mean = total / count;
    double squares = 0.0;                                // Σ (x − μ_g)² = Σ_c Q + 2 (K − μ_g) S + P (K − μ_g)²
    for (int64_t c = first; c < last; ++c) {
      const double offset = s.reference[c] - mean;
      squares += s.square[c] + 2.0 * offset * s.sum[c] + pixels * offset * offset;
    }
    const double inv_std = 1.0 / std::sqrt(squares / count + eps);
    for (int64_t c = first; c < last; ++c) {
      const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
      const double beta = bias ? static_cast<double>(bias[c]) : 0.0;
      scale[c] = static_cast<T>(gamma * inv_std);
      shift[c] = static_cast<T>(beta - mean * gamma * inv_std);
    }
  }
  const T* scale_c = scale.data();
  const T* shift_c = shift.data();
  at::parallel_for(0, l.pixels, std::max<int64_t>(1, kValuesPerTask / l.channels), [&](int64_t begin, int64_t end) {
    if (l.channels_last) {
      for (int64_t p = begin; p < end; ++p) {
#pragma omp simd
        for (int64_t c = 0; c < l.channels; ++c) out[l.at(p, c)] = x[l.at(p, c)] * scale_c[c] + shift_c[c];
      }
    } else {
      for (int64_t c = 0; c < l.channels; ++c) {
#pragma omp simd
        for (int64_t p = begin; p < end; ++p) out[l.at(p, c)] = x[l.at(p, c)] * scale_c[c] + shift_c[c];
      }
    }
  });
}

at::Tensor group_norm(const at::Tensor& x, int64_t groups, const std::optional<at::Tensor>& weight,
                      const std::optional<at::Tensor>& bias, double eps) {
  TORCH_CHECK(x.dim() == 4, "group_norm: x (b, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.size(2) * x.size(3) > 0, "group_norm: x has no pixels, ", x.sizes());   // no parts to sum
  TORCH_CHECK(groups >= 1 && x.size(1) % groups == 0, "group_norm: ", x.size(1), " channels in ", groups,
              " groups");
  for (const auto* affine : {&weight, &bias})
    TORCH_CHECK(!*affine || (*affine)->numel() == x.size(1), "group_norm: a weight and a bias value per channel");
  // the layout it is given, NCHW or channels-last (any other strides: channels-last), is the layout it returns
  const bool channels_last = !x.is_contiguous();
  const at::Tensor x_c = channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
  const at::Tensor weight_c = weight ? weight->to(x.scalar_type()).contiguous() : at::Tensor();
  const at::Tensor bias_c = bias ? bias->to(x.scalar_type()).contiguous() : at::Tensor();
  at::Tensor out = at::empty_like(x_c, channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  const Layout l{x.size(2) * x.size(3), x.size(1), channels_last};
  const int64_t image = l.pixels * l.channels;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ulvm::group_norm", [&] {
    for (int64_t b = 0; b < x.size(0); ++b) {
      group_norm_image<scalar_t>(x_c.data_ptr<scalar_t>() + b * image, weight ? weight_c.data_ptr<scalar_t>() : nullptr,
                                 bias ? bias_c.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>() + b * image,
                                 l, groups, eps);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ulvm, m) {
  m.def("group_norm(Tensor x, int groups, Tensor? weight, Tensor? bias, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(ulvm, CPU, m) {
  m.impl("group_norm", &group_norm);
}
