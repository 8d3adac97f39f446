// CTC loss on the CPU: forward-backward in extended-range probability space, parallel over the batch
// (at::parallel_for, OpenMP). See ctc_loss.h for layouts and docs/ctc_loss.md for the derivation.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "ctc_loss.h"
#include "ext_num.h"

namespace metarecipe {
namespace {

// The extended label sequence of one sample: blank, l1, blank, l2, ..., blank (S = 2U + 1 states).
struct Lattice {
  int64_t frames = 0;          // input length T_b
  int64_t states = 0;          // S
  std::vector<int64_t> label;  // (S,) token of each state
  std::vector<char> skip;      // (S + 2,) 1 where state s may be entered from s - 2, zero-padded

  Lattice(const int64_t* targets, int64_t num_labels, int64_t num_frames, int64_t blank)
      : frames(num_frames), states(2 * num_labels + 1), label(states, blank), skip(states + 2, 0) {
    for (int64_t j = 0; j < num_labels; ++j) {
      label[2 * j + 1] = targets[j];
      if (j > 0 && targets[j] != targets[j - 1]) skip[2 * j + 1] = 1;
    }
  }

  // Fewest frames any alignment needs: one per label, plus a blank between equal neighbours.
  int64_t min_frames() const {
    int64_t need = (states - 1) / 2;
    for (int64_t s = 3; s < states; s += 2)
      if (label[s] == label[s - 2]) ++need;
    return need;
  }

  bool feasible() const { return frames >= min_frames(); }

  // States [lo, hi) at frame t that are reachable from the start and can still reach the end; all others
  // have alpha = 0 or beta = 0 there.
  int64_t lo(int64_t t) const { return std::max<int64_t>(0, states - 2 * (frames - t)); }
  int64_t hi(int64_t t) const { return std::min<int64_t>(states, 2 * (t + 1)); }
};

// exp(log_probs) at one frame for the tokens of a lattice, in extended range. With a vocabulary no larger
// than U + 1 the whole row is converted (entry = token), else blank and the labels (entry 0 = blank,
// entry j + 1 = label j): min(V, U + 1) exps a frame. column[s] is the entry of state s.
struct FrameEmissions {
  std::vector<int64_t> source;  // (C,) vocabulary index of each entry
  std::vector<int64_t> column;  // (S,) entry of each state
  std::vector<double> m;        // (C,) mantissas
  std::vector<int32_t> l;       // (C,) levels

  FrameEmissions(const Lattice& lat, int64_t vocab) : column(lat.states) {
    const int64_t num_labels = (lat.states - 1) / 2;
    if (vocab <= num_labels + 1) {
      for (int64_t k = 0; k < vocab; ++k) source.push_back(k);
      for (int64_t s = 0; s < lat.states; ++s) column[s] = lat.label[s];
    } else {
      source.push_back(lat.label[0]);
      for (int64_t s = 1; s < lat.states; s += 2) source.push_back(lat.label[s]);
      for (int64_t s = 0; s < lat.states; ++s) column[s] = (s & 1) * ((s + 1) >> 1);
    }
    m.resize(source.size());
    l.resize(source.size());
  }

  template <typename scalar_t>
  void load(const scalar_t* row) {
    for (size_t c = 0; c < source.size(); ++c) {
      const ExtNum e = ext_exp(static_cast<double>(row[source[c]]));
      m[c] = e.m;
      l[c] = e.level;
    }
  }
  ExtNum state(int64_t s) const { return {m[column[s]], l[column[s]]}; }
};

// A row of S extended numbers as separate mantissas and levels, with two zero cells on either side.
struct ExtRow {
  std::vector<double> m_buf;
  std::vector<int32_t> l_buf;
  double* m;
  int32_t* l;

  explicit ExtRow(int64_t states)
      : m_buf(states + 4, 0.0), l_buf(states + 4, kZeroLevel), m(m_buf.data() + 2), l(l_buf.data() + 2) {}
  ExtNum get(int64_t s) const { return {m[s], l[s]}; }
  void set(int64_t s, ExtNum x) {
    m[s] = x.m;
    l[s] = x.level;
  }
};

// The saved alpha of one sample: (T, width) mantissas and levels.
struct ExtTable {
  const double* m;
  const int32_t* level;
  int64_t width;
  ExtNum at(int64_t t, int64_t col) const { return {m[t * width + col], level[t * width + col]}; }
};

// Z = alpha over the final states at the last frame.
ExtNum total_mass(const ExtTable& alpha, const Lattice& lat) {
  if (lat.frames == 0) return {1.0, 0};
  const int64_t t = lat.frames - 1, S = lat.states;
  return ext_sum3(alpha.at(t, S - 1), S > 1 ? alpha.at(t, S - 2) : ext_zero(), ext_zero());
}

// alpha_t(s): mass of all partial alignments of frames 0..t ending in state s, emissions included.
// lp points at (t = 0, b) with frame stride `step`.
template <typename scalar_t>
void forward_sample(const scalar_t* lp, int64_t step, const Lattice& lat, FrameEmissions& emit, double* am, int32_t* al,
                    int64_t width) {
  const int64_t S = lat.states;
  ExtRow prev(S), cur(S);
  prev.set(0, {1.0, 0});  // a virtual frame -1 in state 0 lets frame 0 enter states 0 and 1
  for (int64_t t = 0; t < lat.frames; ++t) {
    emit.load(lp + t * step);
    const int64_t lo = lat.lo(t), hi = lat.hi(t);
    for (int64_t s = std::max<int64_t>(0, lo - 2); s < lo; ++s) cur.set(s, ext_zero());  // read by frame t + 1
    const double* pm = prev.m;
    const int32_t* pl = prev.l;
    for (int64_t s = lo; s < hi; ++s) {
      const bool skip = lat.skip[s];
      const int32_t l2 = skip ? pl[s - 2] : kZeroLevel;
      const double m2 = skip ? pm[s - 2] : 0.0;
      const int32_t top = std::max(std::max(pl[s], pl[s - 1]), l2);
      const double sum =
          pm[s] * level_factor(top - pl[s]) + pm[s - 1] * level_factor(top - pl[s - 1]) + m2 * level_factor(top - l2);
      const int64_t c = emit.column[s];
      const ExtNum x = ext_normalize(sum * emit.m[c], top + emit.l[c]);
      cur.set(s, x);
      am[t * width + s] = x.m;
      al[t * width + s] = x.level;
    }
    std::swap(prev, cur);
  }
}

// beta_t(s): mass of all completions of (t, s), emissions after t. Calls visit(t, beta_t, sigma_t) for
// t = T-1 .. 0, valid on [lat.lo(t), lat.hi(t)). When v is given, sigma_t(s) is the expected sum of v over
// the completions (the tangent of log beta along v); with v = nullptr it is not computed. lp and v point
// at (t = 0, b) with frame stride `step`.
template <typename scalar_t, typename Visit>
void backward_sample(const scalar_t* lp, const scalar_t* v, int64_t step, const Lattice& lat, FrameEmissions& emit,
                     Visit visit) {
  const int64_t S = lat.states;
  ExtRow next(S), cur(S), h(S);
  std::vector<double> sigma_next(S + 2, 0.0), sigma_cur(S + 2, 0.0), q(S + 2, 0.0);
  next.set(S - 1, {1.0, 0});
  if (S > 1) next.set(S - 2, {1.0, 0});
  for (int64_t t = lat.frames - 1; t >= 0; --t) {
    if (t < lat.frames - 1) {
      emit.load(lp + (t + 1) * step);
      const int64_t lo1 = lat.lo(t + 1), hi1 = lat.hi(t + 1);
      for (int64_t s = lo1; s < hi1; ++s) h.set(s, ext_mul(next.get(s), emit.state(s)));
      if (v != nullptr) {
        const scalar_t* vrow = v + (t + 1) * step;
        for (int64_t s = lo1; s < hi1; ++s) q[s] = sigma_next[s] + static_cast<double>(vrow[lat.label[s]]);
      }
      for (int64_t s = lat.lo(t), hi = lat.hi(t); s < hi; ++s) {
        const bool skip = lat.skip[s + 2];
        const int32_t l2 = skip ? h.l[s + 2] : kZeroLevel;
        const int32_t top = std::max(std::max(h.l[s], h.l[s + 1]), l2);
        const double w0 = h.m[s] * level_factor(top - h.l[s]);
        const double w1 = h.m[s + 1] * level_factor(top - h.l[s + 1]);
        const double w2 = skip ? h.m[s + 2] * level_factor(top - l2) : 0.0;
        const double total = w0 + w1 + w2;
        cur.set(s, ext_normalize(total, top));
        if (v != nullptr) sigma_cur[s] = total > 0.0 ? (w0 * q[s] + w1 * q[s + 1] + w2 * q[s + 2]) / total : 0.0;
      }
      std::swap(next, cur);
      std::swap(sigma_next, sigma_cur);
    }
    visit(t, next, sigma_next.data());
  }
}

// Calls fn(b) for every sample on torch's intra-op threads, longest lattices first, each thread taking the
// next sample when it is free: utterance lengths vary, and fixed chunks of samples would leave threads idle.
template <typename F>
void parallel_over_samples(const at::Tensor& input_lengths, const at::Tensor& target_lengths, const F& fn) {
  const int64_t batch = input_lengths.numel();
  const at::Tensor cost = input_lengths * (2 * target_lengths + 1);
  const at::Tensor order = at::argsort(cost, /*stable=*/true, /*dim=*/0, /*descending=*/true).contiguous();
  const int64_t* next_sample = order.data_ptr<int64_t>();
  std::atomic<int64_t> taken{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), batch));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t i = taken++; i < batch; i = taken++) fn(next_sample[i]);
  });
}

struct Batch {
  int64_t T, B, V, width;
  const int64_t* targets;
  int64_t target_stride;
  const int64_t* input_lengths;
  const int64_t* target_lengths;
  int64_t blank;

  Batch(const at::Tensor& log_probs, const at::Tensor& targets_, const at::Tensor& input_lengths_,
        const at::Tensor& target_lengths_, int64_t blank_)
      : T(log_probs.size(0)),
        B(log_probs.size(1)),
        V(log_probs.size(2)),
        width(2 * targets_.size(1) + 1),
        targets(targets_.data_ptr<int64_t>()),
        target_stride(targets_.size(1)),
        input_lengths(input_lengths_.data_ptr<int64_t>()),
        target_lengths(target_lengths_.data_ptr<int64_t>()),
        blank(blank_) {
    TORCH_CHECK(log_probs.dim() == 3 && log_probs.is_contiguous(), "log_probs must be contiguous (T, B, V)");
    TORCH_CHECK(
        targets_.dim() == 2 && targets_.is_contiguous() && targets_.scalar_type() == at::kLong && targets_.size(0) == B,
        "targets must be contiguous int64 (B, U)");
    for (const at::Tensor* len : {&input_lengths_, &target_lengths_})
      TORCH_CHECK(len->scalar_type() == at::kLong && len->is_contiguous() && len->numel() == B,
                  "lengths must be contiguous int64 (B,)");
  }

  Lattice lattice(int64_t b) const {
    return Lattice(targets + b * target_stride, target_lengths[b], input_lengths[b], blank);
  }
};

ExtTable saved_alpha(const at::Tensor& alpha_m, const at::Tensor& alpha_l, const Batch& bt, int64_t b) {
  TORCH_CHECK(alpha_m.size(0) == bt.B && alpha_m.size(1) == bt.T && alpha_m.size(2) == bt.width,
              "alpha does not match log_probs and targets");
  const int64_t offset = b * bt.T * bt.width;
  return {alpha_m.data_ptr<double>() + offset, alpha_l.data_ptr<int32_t>() + offset, bt.width};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_forward_cpu(const at::Tensor& log_probs, const at::Tensor& targets,
                                                               const at::Tensor& input_lengths,
                                                               const at::Tensor& target_lengths, int64_t blank) {
  const Batch bt(log_probs, targets, input_lengths, target_lengths, blank);
  auto options = log_probs.options();
  at::Tensor alpha_m = at::zeros({bt.B, bt.T, bt.width}, options.dtype(at::kDouble));
  at::Tensor alpha_l = at::full({bt.B, bt.T, bt.width}, kZeroLevel, options.dtype(at::kInt));
  at::Tensor log_z = at::empty({bt.B}, options.dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_forward_cpu", [&] {
    const scalar_t* lp = log_probs.data_ptr<scalar_t>();
    double* pz = log_z.data_ptr<double>();
    double* am = alpha_m.data_ptr<double>();
    int32_t* al = alpha_l.data_ptr<int32_t>();
    parallel_over_samples(input_lengths, target_lengths, [&](int64_t b) {
      const Lattice lat = bt.lattice(b);
      if (!lat.feasible()) {
        pz[b] = -std::numeric_limits<double>::infinity();
        return;
      }
      FrameEmissions emit(lat, bt.V);
      const int64_t offset = b * bt.T * bt.width;
      forward_sample(lp + b * bt.V, bt.B * bt.V, lat, emit, am + offset, al + offset, bt.width);
      pz[b] = ext_log(total_mass(saved_alpha(alpha_m, alpha_l, bt, b), lat));
    });
  });
  return {log_z, alpha_m, alpha_l};
}

at::Tensor ctc_grad_cpu(const at::Tensor& grad_loss, const at::Tensor& log_probs, const at::Tensor& targets,
                        const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& alpha_m,
                        const at::Tensor& alpha_l, int64_t blank) {
  const Batch bt(log_probs, targets, input_lengths, target_lengths, blank);
  at::Tensor grad = at::zeros_like(log_probs);
  at::Tensor g = grad_loss.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_grad_cpu", [&] {
    const scalar_t* lp = log_probs.data_ptr<scalar_t>();
    const double* pg = g.data_ptr<double>();
    scalar_t* out = grad.data_ptr<scalar_t>();
    parallel_over_samples(input_lengths, target_lengths, [&](int64_t b) {
      const Lattice lat = bt.lattice(b);
      if (!lat.feasible() || pg[b] == 0.0) return;
      const ExtTable alpha = saved_alpha(alpha_m, alpha_l, bt, b);
      const ExtNum z = total_mass(alpha, lat);
      FrameEmissions emit(lat, bt.V);
      // d loss / d lp_t(k) = -sum over states s with label k of gamma_t(s) = alpha_t(s) beta_t(s) / Z
      backward_sample<scalar_t>(lp + b * bt.V, nullptr, bt.B * bt.V, lat, emit,
                                [&](int64_t t, const ExtRow& beta, const double*) {
                                  scalar_t* row = out + (t * bt.B + b) * bt.V;
                                  double blank_sum = 0.0;
                                  for (int64_t s = lat.lo(t), hi = lat.hi(t); s < hi; ++s) {
                                    const double gamma = ext_ratio(alpha.at(t, s), beta.get(s), z);
                                    if (s % 2 == 0)
                                      blank_sum += gamma;
                                    else
                                      row[lat.label[s]] -= static_cast<scalar_t>(pg[b] * gamma);
                                  }
                                  row[bt.blank] -= static_cast<scalar_t>(pg[b] * blank_sum);
                                });
    });
  });
  return grad;
}

std::tuple<at::Tensor, at::Tensor> ctc_hvp_cpu(const at::Tensor& v_, const at::Tensor& grad_loss,
                                               const at::Tensor& log_probs, const at::Tensor& targets,
                                               const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                               const at::Tensor& alpha_m, const at::Tensor& alpha_l, int64_t blank) {
  const Batch bt(log_probs, targets, input_lengths, target_lengths, blank);
  const int64_t step = bt.B * bt.V;
  at::Tensor v = v_.to(log_probs.scalar_type()).contiguous();
  at::Tensor hv = at::zeros_like(log_probs);
  at::Tensor vg = at::zeros({bt.B}, log_probs.options().dtype(at::kDouble));
  at::Tensor g = grad_loss.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_hvp_cpu", [&] {
    const scalar_t* lp = log_probs.data_ptr<scalar_t>();
    const scalar_t* pv = v.data_ptr<scalar_t>();
    const double* pg = g.data_ptr<double>();
    scalar_t* out = hv.data_ptr<scalar_t>();
    double* pvg = vg.data_ptr<double>();
    parallel_over_samples(input_lengths, target_lengths, [&](int64_t b) {
      const Lattice lat = bt.lattice(b);
      if (!lat.feasible()) return;
      const int64_t S = lat.states;
      const ExtTable alpha = saved_alpha(alpha_m, alpha_l, bt, b);
      const ExtNum z = total_mass(alpha, lat);
      const scalar_t* vb = pv + b * bt.V;
      // rho_t(s): expected sum of v over the partial alignments ending in (t, s), the tangent of log alpha.
      std::vector<double> rho(lat.frames * S, 0.0);
      for (int64_t s = lat.lo(0); s < lat.hi(0); ++s) rho[s] = static_cast<double>(vb[lat.label[s]]);
      for (int64_t t = 1; t < lat.frames; ++t) {
        const double* prev = rho.data() + (t - 1) * S;
        const scalar_t* vrow = vb + t * step;
        for (int64_t s = lat.lo(t), hi = lat.hi(t); s < hi; ++s) {
          const ExtNum a0 = alpha.at(t - 1, s);
          const ExtNum a1 = s >= 1 ? alpha.at(t - 1, s - 1) : ext_zero();
          const ExtNum a2 = s >= 2 && lat.skip[s] ? alpha.at(t - 1, s - 2) : ext_zero();
          const int32_t top = ext_top(a0, a1, a2);
          const double w0 = ext_align(a0, top), w1 = ext_align(a1, top), w2 = ext_align(a2, top);
          const double total = w0 + w1 + w2;
          const double weighted = w0 * prev[s] + (s >= 1 ? w1 * prev[s - 1] : 0.0) + (s >= 2 ? w2 * prev[s - 2] : 0.0);
          rho[t * S + s] = (total > 0.0 ? weighted / total : 0.0) + static_cast<double>(vrow[lat.label[s]]);
        }
      }
      // With sigma the tangent of log beta, gamma_dot = gamma (rho + sigma - E_t[rho + sigma]).
      std::vector<double> gamma(S), dev(S);
      double vg_acc = 0.0;
      FrameEmissions emit(lat, bt.V);
      backward_sample<scalar_t>(lp + b * bt.V, vb, step, lat, emit,
                                [&](int64_t t, const ExtRow& beta, const double* sigma) {
                                  const scalar_t* vrow = vb + t * step;
                                  const int64_t lo = lat.lo(t), hi = lat.hi(t);
                                  double mean = 0.0;
                                  for (int64_t s = lo; s < hi; ++s) {
                                    gamma[s] = ext_ratio(alpha.at(t, s), beta.get(s), z);
                                    dev[s] = rho[t * S + s] + sigma[s];
                                    mean += gamma[s] * dev[s];
                                    vg_acc += gamma[s] * static_cast<double>(vrow[lat.label[s]]);
                                  }
                                  scalar_t* hrow = out + t * step + b * bt.V;
                                  for (int64_t s = lo; s < hi; ++s)
                                    hrow[lat.label[s]] -= static_cast<scalar_t>(pg[b] * gamma[s] * (dev[s] - mean));
                                });
      pvg[b] = -vg_acc;
    });
  });
  return {hv, vg.to(log_probs.scalar_type())};
}

}  // namespace metarecipe
