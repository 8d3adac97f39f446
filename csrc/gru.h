// Task-batched GRU recurrence: forward, backward and double backward sweeps (CPU).
//
// Same contracts as metarecipe/kernels/gru_torch.py, which documents the layouts and docs/gru.md the formulas:
// gates_x (T, N, B, 3H), w (N, H, 3H), b (N, 3H), valid (T, N, B), all contiguous and of one float dtype;
// cache (5, T, N, B, H) = previous hidden state, r, z, candidate n, recurrent candidate pre-activation g_n.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace metarecipe {

// Returns (outputs (T, N, B, H), cache).
std::tuple<at::Tensor, at::Tensor> gru_forward_cpu(const at::Tensor& gates_x, const at::Tensor& w, const at::Tensor& b,
                                                   const at::Tensor& valid, bool reverse);

// Returns (d gates_x, d w, d b, gbar (T, N, B, H): the adjoint of each step's new hidden state).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward_cpu(const at::Tensor& grad_out,
                                                                            const at::Tensor& w,
                                                                            const at::Tensor& valid,
                                                                            const at::Tensor& cache, bool reverse);

// Backward of gru_backward for cotangents of its outputs (any may be absent): returns the cotangents of
// (grad_out, gates_x, w, b).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_double_backward_cpu(
    const std::optional<at::Tensor>& v_x, const std::optional<at::Tensor>& v_w, const std::optional<at::Tensor>& v_b,
    const at::Tensor& w, const at::Tensor& valid, const at::Tensor& cache, const at::Tensor& gbar, bool reverse);

// Inference only (float32, no autograd): gates_x (T, B, 3H), w (H, 3H), b (3H), valid (T, B) -> outputs (T, B, H),
// the same values as gru_forward_cpu's for one task.
at::Tensor gru_infer_cpu(const at::Tensor& gates_x, const at::Tensor& w, const at::Tensor& b,
                         const at::Tensor& valid, bool reverse);

// Int8 inference: recurrent weights w (H, 3H) int8 packed once by gru_int8_pack, w_scale (3H) their per output
// channel scales; the hidden state is quantized per row each step. use_vnni runs the product on AVX-512 VNNI
// (cpu_has_vnni() must hold), else on a plain loop with the same integer result.
at::Tensor gru_int8_pack(const at::Tensor& w);
at::Tensor gru_infer_int8_cpu(const at::Tensor& gates_x, const at::Tensor& packed, const at::Tensor& w_scale,
                              const at::Tensor& b, const at::Tensor& valid, bool reverse, bool use_vnni);
bool cpu_has_vnni();

}  // namespace metarecipe
