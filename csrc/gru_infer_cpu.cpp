// The GRU recurrence for inference on the CPU (compact models): one matrix product per step, then one pass over
// the gates in vectorised float32 arithmetic (fast_math.h); nothing is kept for a backward pass.
#include "fast_math.h"
#include "gru.h"

namespace metarecipe {
namespace {

// One row's step: gates x (3H) from the input, g (3H) = h W from the state, recurrent bias b (3H); m 1 or 0.
METARECIPE_VECTOR_CLONES
void gru_row(const float* __restrict__ x, const float* __restrict__ g, const float* __restrict__ b, float m,
             float* __restrict__ h, float* __restrict__ out, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const float r = fast_sigmoid(x[j] + g[j] + b[j]);
    const float z = fast_sigmoid(x[H + j] + g[H + j] + b[H + j]);
    const float cand = fast_tanh(x[2 * H + j] + r * (g[2 * H + j] + b[2 * H + j]));
    const float prev = h[j];
    const float fresh = (cand + z * (prev - cand)) * m;
    out[j] = fresh;
    h[j] = prev + m * (fresh - prev);
  }
}

}  // namespace

at::Tensor gru_infer_cpu(const at::Tensor& gates_x, const at::Tensor& w, const at::Tensor& b,
                         const at::Tensor& valid, bool reverse) {
  TORCH_CHECK(gates_x.dim() == 3 && w.dim() == 2 && b.dim() == 1 && valid.dim() == 2,
              "gru_infer: expected gates_x (T, B, 3H), w (H, 3H), b (3H), valid (T, B)");
  const int64_t T = gates_x.size(0), B = gates_x.size(1), H = w.size(0);
  TORCH_CHECK(gates_x.size(2) == 3 * H && w.size(1) == 3 * H && b.size(0) == 3 * H && valid.size(0) == T &&
                  valid.size(1) == B,
              "gru_infer: shapes disagree");
  for (const at::Tensor* t : {&gates_x, &w, &b, &valid})
    TORCH_CHECK(t->scalar_type() == at::kFloat && !t->is_cuda() && t->is_contiguous(),
                "gru_infer: inputs must be contiguous float32 CPU tensors");
  at::Tensor out = at::empty({T, B, H}, gates_x.options());
  at::Tensor h = at::zeros({B, H}, gates_x.options());
  at::Tensor g = at::empty({B, 3 * H}, gates_x.options());
  const float* gx = gates_x.data_ptr<float>();
  const float* bias = b.data_ptr<float>();
  const float* mask = valid.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* hp = h.data_ptr<float>();
  float* op = out.data_ptr<float>();
  for (int64_t i = 0; i < T; ++i) {
    const int64_t s = reverse ? T - 1 - i : i;
    at::mm_out(g, h, w);
    for (int64_t row = 0; row < B; ++row) {
      const int64_t cell = s * B + row;
      gru_row(gx + cell * 3 * H, gp + row * 3 * H, bias, mask[cell], hp + row * H, op + cell * H, H);
    }
  }
  return out;
}

}  // namespace metarecipe
