// A 2-D convolution as a direct loop, for CPU inference with few output channels (ulvm/cpp/__init__.py builds it
// and swaps it into a model's convolutions with fewer than 8 output channels). Forward only, fp32 and fp64;
// stride 1, groups 1, zero padding: what F.conv2d computes for those, nothing more.
//
// Why: oneDNN, behind F.conv2d on a CPU, computes output channels in blocks of 8 (AVX2) and is slow where a layer
// has fewer, such as the bridge's 2→1 7×7 dilation-3 convolution (model/bridge.py), a large share of a CPU
// forward pass for its size (measured in book/results/bench/NOTES.md).
//
// Glossary: batch b, output channel o (O of them), input channel c (C), kernel taps (ky, kx) of a KH × KW
// kernel, padding (PH, PW), dilation (DH, DW); x (b, C, H, W), weight (O, C, KH, KW), bias (O) or none,
// out (b, O, HO, WO) with HO = H + 2 PH − DH (KH − 1), WO likewise;
//   out[b, o, y, x] = bias[o] + Σ_c Σ_ky Σ_kx weight[o, c, ky, kx] · x[b, c, y − PH + ky DH, x − PW + kx DW]
// (0 outside). Each output row is a sum of shifted input rows, each scaled by one weight: the innermost loop
// runs along a row (contiguous in memory) and is one SIMD loop, over the columns whose input is not padding;
// rows (b, o, y) are independent: at::parallel_for.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace {

struct Geometry {
  int64_t batch, out_channels, channels, height, width, kernel_h, kernel_w, pad_h, pad_w, dilation_h, dilation_w,
      out_h, out_w;
};

template <typename T>
void conv_rows(const T* x, const T* weight, const T* bias, T* out, const Geometry& g) {
  // at least ~32k multiply-adds a task: the small maps of the deep stages run on the calling thread
  const int64_t row_work = g.channels * g.kernel_h * g.kernel_w * g.out_w;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_work));
  at::parallel_for(0, g.batch * g.out_channels * g.out_h, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {          // row = (b, o, y)
      const int64_t b = row / (g.out_channels * g.out_h), o = row / g.out_h % g.out_channels, y = row % g.out_h;
      T* out_row = out + row * g.out_w;
      const T* weight_o = weight + o * g.channels * g.kernel_h * g.kernel_w;
      std::fill(out_row, out_row + g.out_w, bias ? bias[o] : T(0));
      for (int64_t c = 0; c < g.channels; ++c) {
        for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
          const int64_t in_y = y - g.pad_h + ky * g.dilation_h;
          if (in_y < 0 || in_y >= g.height) continue;      // a zero-padding row adds nothing
          const T* in_row = x + ((b * g.channels + c) * g.height + in_y) * g.width;
          for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
            const int64_t shift = kx * g.dilation_w - g.pad_w;         // out column i reads input column i + shift
            const int64_t lo = std::max<int64_t>(0, -shift), hi = std::min<int64_t>(g.out_w, g.width - shift);
            const T w = weight_o[(c * g.kernel_h + ky) * g.kernel_w + kx];
#pragma omp simd
            for (int64_t i = lo; i < hi; ++i) out_row[i] += w * in_row[i + shift];
          }
        }
      }
    }
  });
}

at::Tensor conv2d_direct(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4 && weight.size(1) == x.size(1),
              "conv2d_direct: x (b, C, H, W) and weight (O, C, KH, KW), got x ", x.sizes(), " and weight ",
              weight.sizes());
  TORCH_CHECK(padding.size() == 2 && dilation.size() == 2 && padding[0] >= 0 && padding[1] >= 0 &&
              dilation[0] >= 1 && dilation[1] >= 1, "conv2d_direct: padding (PH, PW) >= 0, dilation (DH, DW) >= 1");
  TORCH_CHECK(!bias || bias->numel() == weight.size(0), "conv2d_direct: a bias value per output channel, got ",
              bias->numel(), " for ", weight.size(0));
  const Geometry g{x.size(0), weight.size(0), x.size(1), x.size(2), x.size(3), weight.size(2), weight.size(3),
                   padding[0], padding[1], dilation[0], dilation[1],
                   x.size(2) + 2 * padding[0] - dilation[0] * (weight.size(2) - 1),
                   x.size(3) + 2 * padding[1] - dilation[1] * (weight.size(3) - 1)};
  TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "conv2d_direct: the kernel is larger than the padded input");
  const at::Tensor x_c = x.contiguous(), weight_c = weight.to(x.scalar_type()).contiguous();
  const at::Tensor bias_c = bias ? bias->to(x.scalar_type()).contiguous() : at::Tensor();
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ulvm::conv2d_direct", [&] {
    conv_rows<scalar_t>(x_c.data_ptr<scalar_t>(), weight_c.data_ptr<scalar_t>(),
                        bias ? bias_c.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), g);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ulvm, m) {
  // compilers hand it a contiguous x (their own layout of that buffer would cost a copy here)
  m.def("conv2d_direct(Tensor x, Tensor weight, Tensor? bias, int[2] padding, int[2] dilation) -> Tensor",
        {at::Tag::needs_contiguous_strides});
}

TORCH_LIBRARY_IMPL(ulvm, CPU, m) {
  m.impl("conv2d_direct", &conv2d_direct);
}
