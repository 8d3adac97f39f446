// The first convolution of the CTC model for inference on the CPU: one input channel, 3 x 3 kernel, stride 2,
// no padding, ReLU fused. General convolution libraries are slow on a single input channel (and erratic for
// channel counts that fill no whole vector, such as pruned models' 12); here each output row is 9 vectorised
// multiply-adds over contiguous arrays: the input rows are split once into even and odd columns, so that
// input column 2f + j is even[f], odd[f] or even[f + 1] for j = 0, 1, 2.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "conv.h"
#include "fast_math.h"

namespace metarecipe {
namespace {

// One output row of every channel: rows (3, 2, Fo + 1) the even and odd columns of 3 input rows, w (C, 9),
// b (C) -> out[c * plane + f] for f < Fo.
METARECIPE_VECTOR_CLONES
void conv_row(const float* __restrict__ rows, const float* __restrict__ w, const float* __restrict__ b, int64_t C,
              int64_t Fo, int64_t plane, float* __restrict__ out) {
  const int64_t stride = Fo + 1;
  for (int64_t c = 0; c < C; ++c) {
    const float* k = w + c * 9;
    float* o = out + c * plane;
    for (int64_t f = 0; f < Fo; ++f) o[f] = b[c];
    for (int64_t i = 0; i < 3; ++i) {
      const float* even = rows + 2 * i * stride;
      const float* odd = even + stride;
      const float k0 = k[3 * i], k1 = k[3 * i + 1], k2 = k[3 * i + 2];
      for (int64_t f = 0; f < Fo; ++f) o[f] += k0 * even[f] + k1 * odd[f] + k2 * even[f + 1];
    }
    for (int64_t f = 0; f < Fo; ++f) o[f] = std::max(o[f], 0.0f);
  }
}

}  // namespace

at::Tensor conv1_relu_infer_cpu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(x.dim() == 3 && w.dim() == 4 && w.size(1) == 1 && w.size(2) == 3 && w.size(3) == 3 && b.dim() == 1 &&
                  b.size(0) == w.size(0),
              "conv1_relu_infer: expected x (B, T, F), w (C, 1, 3, 3), b (C)");
  for (const at::Tensor* t : {&x, &w, &b})
    TORCH_CHECK(t->scalar_type() == at::kFloat && !t->is_cuda() && t->is_contiguous(),
                "conv1_relu_infer: inputs must be contiguous float32 CPU tensors");
  const int64_t B = x.size(0), T = x.size(1), F = x.size(2), C = w.size(0);
  const int64_t To = T >= 3 ? (T - 3) / 2 + 1 : 0, Fo = F >= 3 ? (F - 3) / 2 + 1 : 0;
  at::Tensor out = at::empty({B, C, To, Fo}, x.options());
  if (B * To == 0 || Fo == 0) return out;
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B * To, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(6 * (Fo + 1));
    for (int64_t cell = begin; cell < end; ++cell) {
      const int64_t n = cell / To, t = cell % To;
      for (int64_t i = 0; i < 3; ++i) {
        const float* in = xp + (n * T + 2 * t + i) * F;
        float* even = rows.data() + 2 * i * (Fo + 1);
        float* odd = even + Fo + 1;
        for (int64_t f = 0; f <= Fo; ++f) even[f] = in[2 * f];
        for (int64_t f = 0; f < Fo; ++f) odd[f] = in[2 * f + 1];
      }
      conv_row(rows.data(), wp, bp, C, Fo, To * Fo, op + (n * C * To + t) * Fo);
    }
  });
  return out;
}

}  // namespace metarecipe
