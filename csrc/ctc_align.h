// CTC Viterbi forced alignment: the single best path of a target sequence through the CTC lattice
// (blank, l1, blank, l2, ..., blank; l_{j-1} -> l_j may skip the blank between them when the labels differ).
//
// Ties are broken the same way on every backend: a state keeps its predecessor in the order stay, from s - 1,
// from s - 2 (a later one only when strictly greater), and the path ends in the final blank unless the last
// label scores strictly higher.
//
// Layouts: log_probs (B, T, V) float32 | float64 contiguous CPU, any real scores, summed in double; lengths (B,)
// int64; targets (B, U) int64 padded (labels differ from blank); target_lengths (B,) int64.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace metarecipe {

// Returns (starts (B, U) int64: first frame of each token's run on the best path, ends (B, U) int64: one past
// its last frame, token_scores (B, U) float32: mean log-prob of the token over its run, path_scores (B,)
// float64: log-prob of the best path). Padding positions and utterances without a finite path (-inf) hold -1
// in starts and ends and 0 in token_scores.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ctc_forced_align_cpu(const at::Tensor& log_probs,
                                                                                const at::Tensor& lengths,
                                                                                const at::Tensor& targets,
                                                                                const at::Tensor& target_lengths,
                                                                                int64_t blank);

}  // namespace metarecipe
