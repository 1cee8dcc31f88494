// Group normalisation of NCHW or channels-last maps, for CPU inference (ulvm/cpp/__init__.py builds it; the .pt2
// export swaps it into the model's nn.GroupNorm layers). Forward only, fp32 and fp64: what F.group_norm computes.
//
// Why: Inductor runs the model's convolutions channels-last (oneDNN's layout), where a group is a few adjacent
// channels of every pixel. For the first stage's 8 channels at 256² (groups of 2), the code it generates
// reduces one group at a time with masked 2-wide vector loads: the group norm, pooling and GELU after the first
// convolution took ~1.4 ms of the .pt2 package's time (book/results/bench/NOTES.md row 37). This operator
// keeps the layout it is given, so a model exported channels-last stays channels-last around it: the package
// went from 5.5 to 4.4 ms (row 40).
//
// Glossary: batch b, channel c (C of them) in group g = c / (C / G) (G groups), pixel p (P = H · W), x (b, C, H, W)
// channels-last (x[b, p, c]) or NCHW (x[b, c, p]), weight γ (C), bias β (C);
//   μ_g = mean over (p, c in g) of x,   σ²_g = mean over (p, c in g) of (x − μ_g)²   (two passes, in double),
//   out[b, c, p] = (x[b, c, p] − μ_g) / √(σ²_g + ε) · γ[c] + β[c] = x · scale[c] + shift[c],   in x's layout.
// Each pass reads the image once, along memory (one SIMD loop); the pixels are cut into a fixed number of parts
// (at::parallel_for), so the partial sums, and the result, do not depend on the number of threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kParts = 64;   // pixel ranges summed separately, then added in order

// Where value (p, c) of an image lies: x[p · C + c] channels-last, x[c · P + p] contiguous (NCHW).
struct Layout {
  int64_t pixels, channels;
  bool channels_last;
  int64_t at(int64_t p, int64_t c) const { return channels_last ? p * channels + c : c * pixels + p; }
};

// Σ over pixels of f(x[p, c], c) for every channel c, in double: (C) sums, part by part in a fixed order. The
// inner loop runs along memory: over a pixel's channels channels-last, along a channel's pixels in NCHW.
template <typename T, typename F>
std::vector<double> channel_sums(const T* x, const Layout& l, F f) {
  const int64_t parts = std::min(kParts, l.pixels), step = (l.pixels + parts - 1) / parts;
  std::vector<double> partial(parts * l.channels, 0.0);
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      double* sums = partial.data() + part * l.channels;
      const int64_t first = part * step, last = std::min(l.pixels, (part + 1) * step);
      if (l.channels_last) {
        for (int64_t p = first; p < last; ++p) {
#pragma omp simd
          for (int64_t c = 0; c < l.channels; ++c) sums[c] += f(static_cast<double>(x[p * l.channels + c]), c);
        }
      } else {
        for (int64_t c = 0; c < l.channels; ++c) {
          double sum = 0.0;
#pragma omp simd reduction(+ : sum)
          for (int64_t p = first; p < last; ++p) sum += f(static_cast<double>(x[c * l.pixels + p]), c);
          sums[c] += sum;
        }
      }
    }
  });
  std::vector<double> sums(l.channels, 0.0);
  for (int64_t part = 0; part < parts; ++part)
    for (int64_t c = 0; c < l.channels; ++c) sums[c] += partial[part * l.channels + c];
  return sums;
}

template <typename T>
void group_norm_image(const T* x, const T* weight, const T* bias, T* out, const Layout& l, int64_t groups,
                      double eps) {
  const int64_t per_group = l.channels / groups;
  const double count = static_cast<double>(l.pixels * per_group);
  const std::vector<double> sums = channel_sums(x, l, [](double v, int64_t) { return v; });
  std::vector<double> mean(l.channels);                     // μ of each channel's group
  for (int64_t g = 0; g < groups; ++g) {
    double total = 0.0;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) total += sums[c];
    std::fill(mean.begin() + g * per_group, mean.begin() + (g + 1) * per_group, total / count);
  }
  const double* mu = mean.data();
  const std::vector<double> squares = channel_sums(x, l, [mu](double v, int64_t c) { return (v - mu[c]) * (v - mu[c]); });
  std::vector<T> scale(l.channels), shift(l.channels);
  for (int64_t g = 0; g < groups; ++g) {
    double total = 0.0;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) total += squares[c];
    const double inv_std = 1.0 / std::sqrt(total / count + eps);
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
      const double gamma = weight ? static_cast<double>(weight[c]) : 1.0;
      const double beta = bias ? static_cast<double>(bias[c]) : 0.0;
      scale[c] = static_cast<T>(gamma * inv_std);
      shift[c] = static_cast<T>(beta - mean[c] * gamma * inv_std);
    }
  }
  const T* scale_c = scale.data();
  const T* shift_c = shift.data();
  at::parallel_for(0, l.pixels, 2048, [&](int64_t begin, int64_t end) {
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
