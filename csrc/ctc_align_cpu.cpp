// CTC Viterbi forced alignment on the CPU, parallel over the batch (at::parallel_for). See ctc_align.h for the
// layouts and the tie-breaking rule; metarecipe/kernels/ctc_align_numba.py is the same algorithm in numba.
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "ctc_align.h"

namespace metarecipe {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// How a state was entered on the best path into it, one byte per (t, s): from state s - choice.
enum Choice : int8_t { kStay = 0, kFromPrevious = 1, kFromSkip = 2 };

// The extended label sequence of one utterance: blank, l1, blank, l2, ..., blank (S = 2U + 1 states).
struct AlignLattice {
  int64_t frames;              // T_b
  int64_t states;              // S
  std::vector<int64_t> label;  // (S,) token of each state
  std::vector<char> skip;      // (S,) 1 where state s may be entered from s - 2

  AlignLattice(const int64_t* targets, int64_t num_labels, int64_t num_frames, int64_t blank)
      : frames(num_frames), states(2 * num_labels + 1), label(states, blank), skip(states, 0) {
    for (int64_t j = 0; j < num_labels; ++j) {
      label[2 * j + 1] = targets[j];
      if (j > 0 && targets[j] != targets[j - 1]) skip[2 * j + 1] = 1;
    }
  }

  // Fewest frames any path needs: one per label, plus a blank between equal neighbours.
  bool feasible() const {
    int64_t need = (states - 1) / 2;
    for (int64_t s = 3; s < states; s += 2) need += label[s] == label[s - 2];
    return frames >= need;
  }

  // States [lo, hi) at frame t that are reachable from the start and can still reach the end.
  int64_t lo(int64_t t) const { return std::max<int64_t>(0, states - 2 * (frames - t)); }
  int64_t hi(int64_t t) const { return std::min<int64_t>(states, 2 * (t + 1)); }
};

// One utterance: lp (T_b, V) row-major; writes its row of each output (left at -1 / 0 without a finite path).
template <typename scalar_t>
void align_sample(const scalar_t* lp, int64_t vocab, const AlignLattice& lat, int64_t* starts, int64_t* ends,
                  float* token_scores, double* path_score) {
  const int64_t S = lat.states, T = lat.frames;
  if (!lat.feasible()) {
    *path_score = kNegInf;
    return;
  }
  if (T == 0) {  // feasible: an empty target
    *path_score = 0.0;
    return;
  }
  // delta rows over states with two -inf cells in front, so that s - 1 and s - 2 need no test
  std::vector<double> prev_buf(S + 2, kNegInf), cur_buf(S + 2, kNegInf);
  double* prev = prev_buf.data() + 2;
  double* cur = cur_buf.data() + 2;
  std::vector<int8_t> choice(T * S, kStay);  // (T_b, S)
  prev[0] = 0.0;                             // a virtual frame -1 in state 0 lets frame 0 enter states 0 and 1
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = lp + t * vocab;
    const int64_t lo = lat.lo(t), hi = lat.hi(t);
    for (int64_t s = std::max<int64_t>(0, lo - 2); s < lo; ++s) cur[s] = kNegInf;  // read by frame t + 1
    int8_t* from = choice.data() + t * S;
    for (int64_t s = lo; s < hi; ++s) {
      double best = prev[s];
      int8_t how = kStay;
      if (prev[s - 1] > best) {
        best = prev[s - 1];
        how = kFromPrevious;
      }
      if (lat.skip[s] && prev[s - 2] > best) {
        best = prev[s - 2];
        how = kFromSkip;
      }
      cur[s] = best + static_cast<double>(row[lat.label[s]]);
      from[s] = how;
    }
    std::swap(prev, cur);
  }
  int64_t s = S > 1 && prev[S - 2] > prev[S - 1] ? S - 2 : S - 1;
  if (!(prev[s] > kNegInf)) {
    *path_score = kNegInf;
    return;
  }
  *path_score = prev[s];
  std::vector<double> sums((S - 1) / 2, 0.0);  // per label: its log-probs along the path, last frame first
  for (int64_t t = T - 1; t >= 0; --t) {
    if (s & 1) {
      const int64_t j = s >> 1;
      if (ends[j] < 0) ends[j] = t + 1;
      starts[j] = t;
      sums[j] += static_cast<double>(lp[t * vocab + lat.label[s]]);
    }
    s -= choice[t * S + s];
  }
  for (size_t j = 0; j < sums.size(); ++j) token_scores[j] = static_cast<float>(sums[j] / (ends[j] - starts[j]));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ctc_forced_align_cpu(const at::Tensor& log_probs,
                                                                                const at::Tensor& lengths,
                                                                                const at::Tensor& targets,
                                                                                const at::Tensor& target_lengths,
                                                                                int64_t blank) {
  TORCH_CHECK(log_probs.dim() == 3 && log_probs.is_contiguous() && !log_probs.is_cuda(),
              "log_probs must be a contiguous (B, T, V) CPU tensor");
  const int64_t B = log_probs.size(0), T = log_probs.size(1), V = log_probs.size(2);
  TORCH_CHECK(
      targets.dim() == 2 && targets.is_contiguous() && targets.scalar_type() == at::kLong && targets.size(0) == B,
      "targets must be contiguous int64 (B, U)");
  for (const at::Tensor* len : {&lengths, &target_lengths})
    TORCH_CHECK(len->scalar_type() == at::kLong && len->is_contiguous() && len->numel() == B,
                "lengths and target_lengths must be contiguous int64 (B,)");
  TORCH_CHECK(blank >= 0 && blank < V, "blank must lie in [0, V)");
  const int64_t U = targets.size(1);
  const int64_t* tokens = targets.data_ptr<int64_t>();
  const int64_t* frames = lengths.data_ptr<int64_t>();
  const int64_t* labels = target_lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(frames[b] >= 0 && frames[b] <= T && labels[b] >= 0 && labels[b] <= U, "utterance ", b,
                ": lengths must lie in [0, T] and target_lengths in [0, U]");
    for (int64_t j = 0; j < labels[b]; ++j)
      TORCH_CHECK(tokens[b * U + j] >= 0 && tokens[b * U + j] < V && tokens[b * U + j] != blank, "targets[", b, "][", j,
                  "] is not a label in [0, V) other than blank");
  }
  at::Tensor starts = at::full({B, U}, -1, targets.options());
  at::Tensor ends = at::full({B, U}, -1, targets.options());
  at::Tensor token_scores = at::zeros({B, U}, log_probs.options().dtype(at::kFloat));
  at::Tensor path_scores = at::empty({B}, log_probs.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_forced_align_cpu", [&] {
    const scalar_t* lp = log_probs.data_ptr<scalar_t>();
    int64_t* first = starts.data_ptr<int64_t>();
    int64_t* after = ends.data_ptr<int64_t>();
    float* mean = token_scores.data_ptr<float>();
    double* best = path_scores.data_ptr<double>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const AlignLattice lat(tokens + b * U, labels[b], frames[b], blank);
        align_sample(lp + b * T * V, V, lat, first + b * U, after + b * U, mean + b * U, best + b);
      }
    });
  });
  return {starts, ends, token_scores, path_scores};
}

}  // namespace metarecipe
