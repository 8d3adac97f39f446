// CTC loss with exact first and second derivatives: shared declarations.
//
// Algorithm (docs/ctc_loss.md): forward-backward in probability space, computed in double whatever the input
// dtype, with every lattice value held in extended range as m * 2^(256 L) (`ExtNum`), so no sequence length
// or dynamic range under- or overflows and the recursions need no exp or log per cell.
//
// Layouts: log_probs (T, B, V) contiguous; targets (B, U) int64 padded; lengths (B,) int64 on the device
// of log_probs; alpha_m (B, T, 2U+1) float64 and alpha_l (B, T, 2U+1) int32 the saved forward variables;
// log_z (B,) float64, -inf where no alignment exists.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace metarecipe {

#define METARECIPE_CTC_DECLARE(suffix)                                                                              \
  /* Returns (log_z, alpha_m, alpha_l). */                                                                          \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_forward_##suffix(                                              \
      const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,                      \
      const at::Tensor& target_lengths, int64_t blank);                                                             \
  /* grad_loss_b * d(-log Z_b) / d log_probs: (T, B, V). */                                                         \
  at::Tensor ctc_grad_##suffix(const at::Tensor& grad_loss, const at::Tensor& log_probs, const at::Tensor& targets, \
                               const at::Tensor& input_lengths, const at::Tensor& target_lengths,                   \
                               const at::Tensor& alpha_m, const at::Tensor& alpha_l, int64_t blank);                \
  /* Backward of ctc_grad for an incoming gradient v (T, B, V): (grad_loss_b * H_b v_b (T, B, V),                   \
     -<gamma_b, v_b> (B,)), the Hessian-vector product and the derivative w.r.t. grad_loss. */                      \
  std::tuple<at::Tensor, at::Tensor> ctc_hvp_##suffix(                                                              \
      const at::Tensor& v, const at::Tensor& grad_loss, const at::Tensor& log_probs, const at::Tensor& targets,     \
      const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& alpha_m,                 \
      const at::Tensor& alpha_l, int64_t blank);

METARECIPE_CTC_DECLARE(cpu)
#ifdef WITH_CUDA
METARECIPE_CTC_DECLARE(cuda)
#endif

#undef METARECIPE_CTC_DECLARE

}  // namespace metarecipe
