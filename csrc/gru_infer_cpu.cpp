// The GRU recurrence for inference on the CPU (compact models): one matrix product per step, then one pass over
// the gates in vectorised float32 arithmetic (fast_math.h); nothing is kept for a backward pass.
//
// The int8 variant keeps the recurrent weights in int8 (per output channel scales) and quantizes each row of the
// hidden state to int8 every step (per row scale max|h| / 127). Its product runs on AVX-512 VNNI (vpdpbusd:
// 64 multiply-adds of unsigned by signed bytes per instruction) where the CPU has it, else on a plain loop with
// the same integer result. vpdpbusd multiplies unsigned bytes by signed ones, so the weights are packed as
// w + 128 and the product corrected by 128 * sum_k h_q[k].
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define METARECIPE_HAVE_VNNI_BUILD 1
#endif

#include "fast_math.h"
#include "gru.h"

namespace metarecipe {
namespace {

constexpr int64_t kLanes = 16;  // int32 accumulators per 512-bit vector: one block of output columns
constexpr int64_t kGroup = 4;   // bytes summed into one accumulator by vpdpbusd
constexpr int64_t kRows = 8;    // hidden-state rows that share one load of a weight vector

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

// Quantizes h (H) to q (Kp, zero beyond H) with scale max|h| / 127; returns the scale and sets sum to sum_k q[k].
METARECIPE_VECTOR_CLONES
float quantize_row(const float* __restrict__ h, int8_t* __restrict__ q, int64_t H, int64_t Kp, int32_t* sum) {
  float top = 0.0f;
  for (int64_t k = 0; k < H; ++k) top = std::max(top, std::fabs(h[k]));
  const float scale = top / 127.0f;
  const float inverse = top > 0.0f ? 127.0f / top : 0.0f;
  int32_t total = 0;
  for (int64_t k = 0; k < H; ++k) {
    const float rounded = (h[k] * inverse + 12582912.0f) - 12582912.0f;  // round to nearest, |value| <= 127
    const int32_t value = static_cast<int32_t>(rounded);
    q[k] = static_cast<int8_t>(value);
    total += value;
  }
  for (int64_t k = H; k < Kp; ++k) q[k] = 0;
  *sum = total;
  return scale;
}

// acc (rows, Nb * 16) = sum_k q[row][k] * (w[k][col] + 128), w packed as (Nb, Kg, 16, 4) uint8; rows % 8 == 0.
METARECIPE_VECTOR_CLONES
void int8_product_plain(const uint8_t* __restrict__ w, const int8_t* __restrict__ q, int32_t* __restrict__ acc,
                        int64_t rows, int64_t Kg, int64_t Nb) {
  const int64_t Kp = Kg * kGroup, Np = Nb * kLanes;
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t nb = 0; nb < Nb; ++nb) {
      int32_t sums[kLanes] = {};
      const uint8_t* block = w + nb * Kg * kLanes * kGroup;
      for (int64_t kg = 0; kg < Kg; ++kg) {
        const int8_t* four = q + row * Kp + kg * kGroup;
        const uint8_t* weights = block + kg * kLanes * kGroup;
        for (int64_t lane = 0; lane < kLanes; ++lane)
          for (int64_t i = 0; i < kGroup; ++i)
            sums[lane] += static_cast<int32_t>(weights[lane * kGroup + i]) * static_cast<int32_t>(four[i]);
      }
      for (int64_t lane = 0; lane < kLanes; ++lane) acc[row * Np + nb * kLanes + lane] = sums[lane];
    }
}

#ifdef METARECIPE_HAVE_VNNI_BUILD
__attribute__((target("avx512f,avx512vnni")))
void int8_product_vnni(const uint8_t* w, const int8_t* q, int32_t* acc, int64_t rows, int64_t Kg, int64_t Nb) {
  const int64_t Kp = Kg * kGroup, Np = Nb * kLanes;
  for (int64_t row0 = 0; row0 < rows; row0 += kRows)
    for (int64_t nb = 0; nb < Nb; ++nb) {
      __m512i sums[kRows];
#pragma GCC unroll 8
      for (int64_t r = 0; r < kRows; ++r) sums[r] = _mm512_setzero_si512();
      const uint8_t* block = w + nb * Kg * kLanes * kGroup;
      for (int64_t kg = 0; kg < Kg; ++kg) {
        const __m512i weights = _mm512_loadu_si512(block + kg * kLanes * kGroup);
#pragma GCC unroll 8
        for (int64_t r = 0; r < kRows; ++r) {
          int32_t four;
          std::memcpy(&four, q + (row0 + r) * Kp + kg * kGroup, sizeof four);
          sums[r] = _mm512_dpbusd_epi32(sums[r], weights, _mm512_set1_epi32(four));
        }
      }
#pragma GCC unroll 8
      for (int64_t r = 0; r < kRows; ++r) _mm512_storeu_si512(acc + (row0 + r) * Np + nb * kLanes, sums[r]);
    }
}
#endif

// g (3H) = (acc - 128 sum) * h_scale * w_scale, the float value of one row's product.
METARECIPE_VECTOR_CLONES
void dequantize_row(const int32_t* __restrict__ acc, int32_t sum, float h_scale, const float* __restrict__ w_scale,
                    float* __restrict__ g, int64_t n) {
  const int32_t offset = 128 * sum;
  for (int64_t j = 0; j < n; ++j) g[j] = static_cast<float>(acc[j] - offset) * (h_scale * w_scale[j]);
}

void check_inputs(const at::Tensor& gates_x, const at::Tensor& b, const at::Tensor& valid, int64_t H) {
  TORCH_CHECK(gates_x.dim() == 3 && b.dim() == 1 && valid.dim() == 2,
              "gru_infer: expected gates_x (T, B, 3H), b (3H), valid (T, B)");
  TORCH_CHECK(gates_x.size(2) == 3 * H && b.size(0) == 3 * H && valid.size(0) == gates_x.size(0) &&
                  valid.size(1) == gates_x.size(1),
              "gru_infer: shapes disagree");
  for (const at::Tensor* t : {&gates_x, &b, &valid})
    TORCH_CHECK(t->scalar_type() == at::kFloat && !t->is_cuda() && t->is_contiguous(),
                "gru_infer: inputs must be contiguous float32 CPU tensors");
}

}  // namespace

bool cpu_has_vnni() {
#ifdef METARECIPE_HAVE_VNNI_BUILD
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

at::Tensor gru_int8_pack(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kChar && !w.is_cuda(),
              "gru_int8_pack: expected an int8 CPU tensor (H, 3H)");
  const int64_t H = w.size(0), N = w.size(1);
  const int64_t Kg = (H + kGroup - 1) / kGroup, Nb = (N + kLanes - 1) / kLanes;
  // Zero weights (128 after the offset) in the padding: the correction removes them again.
  at::Tensor packed = at::full({Nb, Kg, kLanes, kGroup}, 128, w.options().dtype(at::kByte));
  const at::Tensor wc = w.contiguous();
  const int8_t* src = wc.data_ptr<int8_t>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  for (int64_t k = 0; k < H; ++k)
    for (int64_t j = 0; j < N; ++j)
      dst[(((j / kLanes) * Kg + k / kGroup) * kLanes + j % kLanes) * kGroup + k % kGroup] =
          static_cast<uint8_t>(static_cast<int32_t>(src[k * N + j]) + 128);
  return packed;
}

at::Tensor gru_infer_int8_cpu(const at::Tensor& gates_x, const at::Tensor& packed, const at::Tensor& w_scale,
                              const at::Tensor& b, const at::Tensor& valid, bool reverse, bool use_vnni) {
  const int64_t H = w_scale.size(0) / 3;
  check_inputs(gates_x, b, valid, H);
  TORCH_CHECK(w_scale.dim() == 1 && w_scale.size(0) == 3 * H && w_scale.scalar_type() == at::kFloat &&
                  w_scale.is_contiguous(),
              "gru_infer_int8: w_scale must be a contiguous float32 (3H)");
  const int64_t Kg = (H + kGroup - 1) / kGroup, Nb = (3 * H + kLanes - 1) / kLanes;
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.dim() == 4 &&
                  packed.size(0) == Nb && packed.size(1) == Kg && packed.size(2) == kLanes && packed.size(3) == kGroup,
              "gru_infer_int8: packed weights must come from gru_int8_pack for H = ", H);
  TORCH_CHECK(!use_vnni || cpu_has_vnni(), "gru_infer_int8: this CPU (or build) has no AVX-512 VNNI");
  const int64_t T = gates_x.size(0), B = gates_x.size(1), Kp = Kg * kGroup, Np = Nb * kLanes;
  const int64_t rows = (B + kRows - 1) / kRows * kRows;
  at::Tensor out = at::empty({T, B, H}, gates_x.options());
  std::vector<float> h(B * H, 0.0f), g(3 * H), h_scale(B);
  std::vector<int8_t> q(rows * Kp, 0);
  std::vector<int32_t> acc(rows * Np), sums(B);
  const float* gx = gates_x.data_ptr<float>();
  const float* bias = b.data_ptr<float>();
  const float* mask = valid.data_ptr<float>();
  const float* scale = w_scale.data_ptr<float>();
  const uint8_t* w = packed.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  for (int64_t i = 0; i < T; ++i) {
    const int64_t s = reverse ? T - 1 - i : i;
    for (int64_t row = 0; row < B; ++row)
      h_scale[row] = quantize_row(h.data() + row * H, q.data() + row * Kp, H, Kp, &sums[row]);
#ifdef METARECIPE_HAVE_VNNI_BUILD
    if (use_vnni)
      int8_product_vnni(w, q.data(), acc.data(), rows, Kg, Nb);
    else
#endif
      int8_product_plain(w, q.data(), acc.data(), rows, Kg, Nb);
    for (int64_t row = 0; row < B; ++row) {
      const int64_t cell = s * B + row;
      dequantize_row(acc.data() + row * Np, sums[row], h_scale[row], scale, g.data(), 3 * H);
      gru_row(gx + cell * 3 * H, g.data(), bias, mask[cell], h.data() + row * H, op + cell * H, H);
    }
  }
  return out;
}

at::Tensor gru_infer_cpu(const at::Tensor& gates_x, const at::Tensor& w, const at::Tensor& b,
                         const at::Tensor& valid, bool reverse) {
  TORCH_CHECK(w.dim() == 2 && w.size(1) == 3 * w.size(0), "gru_infer: shapes disagree: expected w (H, 3H)");
  TORCH_CHECK(w.scalar_type() == at::kFloat && !w.is_cuda() && w.is_contiguous(),
              "gru_infer: inputs must be contiguous float32 CPU tensors");
  const int64_t T = gates_x.size(0), B = gates_x.size(1), H = w.size(0);
  check_inputs(gates_x, b, valid, H);
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
