// CTC loss on CUDA: the algorithm of ctc_loss_cpu.cpp with one thread block per sample and the threads
// spread over the lattice states; frames advance in lock step (__syncthreads). Rows of the recursion live in
// global scratch (L2-resident), so the target length has no cap. See ctc_loss.h and docs/ctc_loss.md.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "ctc_loss.h"
#include "ext_num.h"

namespace metarecipe {
namespace {

constexpr int kThreads = 256;

// One sample's lattice, read from the padded targets.
struct DeviceLattice {
  const int64_t* targets;  // (U,)
  int64_t frames, states, blank;

  __device__ int64_t label(int64_t s) const { return (s & 1) ? targets[(s - 1) / 2] : blank; }
  // State s may be entered from s - 2: a label differing from the label before it.
  __device__ bool skip(int64_t s) const {
    return (s & 1) && s >= 3 && s < states && targets[(s - 1) / 2] != targets[(s - 3) / 2];
  }
  __device__ int64_t lo(int64_t t) const { return max(int64_t(0), states - 2 * (frames - t)); }
  __device__ int64_t hi(int64_t t) const { return min(states, 2 * (t + 1)); }
};

__device__ DeviceLattice lattice_of(const int64_t* targets, const int64_t* input_lengths, const int64_t* target_lengths,
                                    int64_t max_labels, int64_t blank) {
  const int64_t b = blockIdx.x;
  return {targets + b * max_labels, input_lengths[b], 2 * target_lengths[b] + 1, blank};
}

// Whether some alignment fits in the frames (one per label, plus a blank between equal neighbours).
__device__ bool feasible(const DeviceLattice& lat) {
  __shared__ bool result;
  if (threadIdx.x == 0) {
    const int64_t num_labels = (lat.states - 1) / 2;
    int64_t need = num_labels;
    for (int64_t j = 1; j < num_labels; ++j) need += lat.targets[j] == lat.targets[j - 1];
    result = lat.frames >= need;
  }
  __syncthreads();
  return result;
}

// Sum of x over the block, returned to every thread.
__device__ double block_sum(double x) {
  __shared__ double partial[kThreads / 32];
  __shared__ double total;
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffff, x, offset);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    double sum = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) sum += partial[w];
    total = sum;
  }
  __syncthreads();
  const double result = total;
  __syncthreads();
  return result;
}

struct DeviceExtTable {  // (rows, width) extended numbers
  double* m;
  int32_t* l;
  int64_t width;
  __device__ ExtNum get(int64_t row, int64_t col) const { return {m[row * width + col], l[row * width + col]}; }
  __device__ void set(int64_t row, int64_t col, ExtNum x) const {
    m[row * width + col] = x.m;
    l[row * width + col] = x.level;
  }
};

__device__ ExtNum total_mass(const DeviceExtTable& alpha, const DeviceLattice& lat) {
  if (lat.frames == 0) return {1.0, 0};
  const int64_t t = lat.frames - 1, S = lat.states;
  return ext_sum3(alpha.get(t, S - 1), S > 1 ? alpha.get(t, S - 2) : ext_zero(), ext_zero());
}

template <typename scalar_t>
__device__ ExtNum emission(const scalar_t* lp, int64_t t, int64_t batch, int64_t vocab, int64_t token) {
  return ext_exp(static_cast<double>(lp[(t * batch + blockIdx.x) * vocab + token]));
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* lp, const int64_t* targets, const int64_t* input_lengths,
                               const int64_t* target_lengths, int64_t max_frames, int64_t batch, int64_t vocab,
                               int64_t max_labels, int64_t blank, double* alpha_m, int32_t* alpha_l, double* log_z) {
  const DeviceLattice lat = lattice_of(targets, input_lengths, target_lengths, max_labels, blank);
  if (!feasible(lat)) {
    if (threadIdx.x == 0) log_z[blockIdx.x] = -INFINITY;
    return;
  }
  const int64_t width = 2 * max_labels + 1, offset = blockIdx.x * max_frames * width;
  const DeviceExtTable alpha{alpha_m + offset, alpha_l + offset, width};
  const ExtNum one{1.0, 0};
  for (int64_t t = 0; t < lat.frames; ++t) {
    for (int64_t s = lat.lo(t) + threadIdx.x; s < lat.hi(t); s += blockDim.x) {
      ExtNum a0, a1, a2 = ext_zero();
      if (t == 0) {  // a virtual frame -1 in state 0 lets frame 0 enter states 0 and 1
        a0 = s == 0 ? one : ext_zero();
        a1 = s == 1 ? one : ext_zero();
      } else {
        a0 = alpha.get(t - 1, s);
        a1 = s >= 1 ? alpha.get(t - 1, s - 1) : ext_zero();
        if (lat.skip(s)) a2 = alpha.get(t - 1, s - 2);
      }
      alpha.set(t, s, ext_sum3_mul(a0, a1, a2, emission(lp, t, batch, vocab, lat.label(s))));
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) log_z[blockIdx.x] = ext_log(total_mass(alpha, lat));
}

// Scratch rows for the backward recursion of one sample: beta at t + 1 and t (ping-pong), h = beta * emission
// at t + 1, and (for the Hessian) sigma at t + 1 and t and q = sigma + v at t + 1. Rows are width + 2 long
// with zero padding past the last state.
struct BackwardScratch {
  DeviceExtTable beta;  // 2 rows
  DeviceExtTable h;     // 1 row
  double* sigma;        // 2 rows
  double* q;            // 1 row
};

// One step back: beta (and sigma when v is given) at t from those at t + 1 in row `next`, into row 1 - next.
template <typename scalar_t>
__device__ void backward_step(const scalar_t* lp, const scalar_t* v, int64_t t, int64_t batch, int64_t vocab,
                              const DeviceLattice& lat, const BackwardScratch& sc, int next) {
  const int64_t row = sc.h.width;
  for (int64_t s = lat.lo(t + 1) + threadIdx.x; s < lat.hi(t + 1); s += blockDim.x) {
    const int64_t token = lat.label(s);
    sc.h.set(0, s, ext_mul(sc.beta.get(next, s), emission(lp, t + 1, batch, vocab, token)));
    if (v != nullptr)
      sc.q[s] = sc.sigma[next * row + s] + static_cast<double>(v[((t + 1) * batch + blockIdx.x) * vocab + token]);
  }
  __syncthreads();
  for (int64_t s = lat.lo(t) + threadIdx.x; s < lat.hi(t); s += blockDim.x) {
    const ExtNum h0 = sc.h.get(0, s), h1 = sc.h.get(0, s + 1);
    const ExtNum h2 = lat.skip(s + 2) ? sc.h.get(0, s + 2) : ext_zero();
    const int32_t top = ext_top(h0, h1, h2);
    const double w0 = ext_align(h0, top), w1 = ext_align(h1, top), w2 = ext_align(h2, top);
    const double total = w0 + w1 + w2;
    sc.beta.set(1 - next, s, ext_normalize(total, top));
    if (v != nullptr)
      sc.sigma[(1 - next) * row + s] = total > 0.0 ? (w0 * sc.q[s] + w1 * sc.q[s + 1] + w2 * sc.q[s + 2]) / total : 0.0;
  }
  __syncthreads();
}

__device__ void init_final_states(const DeviceLattice& lat, const BackwardScratch& sc) {
  if (threadIdx.x == 0) {
    sc.beta.set(0, lat.states - 1, {1.0, 0});
    if (lat.states > 1) sc.beta.set(0, lat.states - 2, {1.0, 0});
  }
  __syncthreads();
}

__device__ BackwardScratch scratch_of(double* beta_m, int32_t* beta_l, double* h_m, int32_t* h_l, double* sigma,
                                      double* q, int64_t max_labels) {
  const int64_t row = 2 * max_labels + 3, b = blockIdx.x;
  return {{beta_m + 2 * b * row, beta_l + 2 * b * row, row},
          {h_m + b * row, h_l + b * row, row},
          sigma == nullptr ? nullptr : sigma + 2 * b * row,
          q == nullptr ? nullptr : q + b * row};
}

template <typename scalar_t>
__global__ void grad_kernel(const double* grad_loss, const scalar_t* lp, const int64_t* targets,
                            const int64_t* input_lengths, const int64_t* target_lengths, int64_t max_frames,
                            int64_t batch, int64_t vocab, int64_t max_labels, int64_t blank, const double* alpha_m,
                            const int32_t* alpha_l, double* beta_m, int32_t* beta_l, double* h_m, int32_t* h_l,
                            scalar_t* grad) {
  const DeviceLattice lat = lattice_of(targets, input_lengths, target_lengths, max_labels, blank);
  const double g = grad_loss[blockIdx.x];
  if (!feasible(lat) || g == 0.0) return;
  const int64_t width = 2 * max_labels + 1, offset = blockIdx.x * max_frames * width;
  const DeviceExtTable alpha{const_cast<double*>(alpha_m) + offset, const_cast<int32_t*>(alpha_l) + offset, width};
  const BackwardScratch sc = scratch_of(beta_m, beta_l, h_m, h_l, nullptr, nullptr, max_labels);
  const ExtNum z = total_mass(alpha, lat);
  __shared__ double blank_sum;
  init_final_states(lat, sc);
  int next = 0;
  for (int64_t t = lat.frames - 1; t >= 0; --t) {
    if (t < lat.frames - 1) {
      backward_step<scalar_t>(lp, nullptr, t, batch, vocab, lat, sc, next);
      next = 1 - next;
    }
    if (threadIdx.x == 0) blank_sum = 0.0;
    __syncthreads();
    scalar_t* row = grad + (t * batch + blockIdx.x) * vocab;
    for (int64_t s = lat.lo(t) + threadIdx.x; s < lat.hi(t); s += blockDim.x) {
      const double gamma = ext_ratio(alpha.get(t, s), sc.beta.get(next, s), z);
      if (s & 1)
        atomicAdd(row + lat.label(s), static_cast<scalar_t>(-g * gamma));  // a label may repeat in the target
      else
        atomicAdd(&blank_sum, gamma);
    }
    __syncthreads();
    if (threadIdx.x == 0) row[blank] -= static_cast<scalar_t>(g * blank_sum);
  }
}

template <typename scalar_t>
__global__ void hvp_kernel(const scalar_t* v, const double* grad_loss, const scalar_t* lp, const int64_t* targets,
                           const int64_t* input_lengths, const int64_t* target_lengths, int64_t max_frames,
                           int64_t batch, int64_t vocab, int64_t max_labels, int64_t blank, const double* alpha_m,
                           const int32_t* alpha_l, double* rho, double* beta_m, int32_t* beta_l, double* h_m,
                           int32_t* h_l, double* sigma, double* q, scalar_t* hv, double* vg) {
  const DeviceLattice lat = lattice_of(targets, input_lengths, target_lengths, max_labels, blank);
  if (!feasible(lat)) return;
  const double g = grad_loss[blockIdx.x];
  const int64_t width = 2 * max_labels + 1, offset = blockIdx.x * max_frames * width;
  const DeviceExtTable alpha{const_cast<double*>(alpha_m) + offset, const_cast<int32_t*>(alpha_l) + offset, width};
  double* rho_b = rho + offset;
  auto v_at = [&](int64_t t, int64_t s) {
    return static_cast<double>(v[(t * batch + blockIdx.x) * vocab + lat.label(s)]);
  };
  // rho_t(s): tangent of log alpha_t(s), the expected sum of v over partial alignments ending in (t, s)
  for (int64_t t = 0; t < lat.frames; ++t) {
    for (int64_t s = lat.lo(t) + threadIdx.x; s < lat.hi(t); s += blockDim.x) {
      double mean = 0.0;
      if (t > 0) {
        const ExtNum a0 = alpha.get(t - 1, s);
        const ExtNum a1 = s >= 1 ? alpha.get(t - 1, s - 1) : ext_zero();
        const ExtNum a2 = lat.skip(s) ? alpha.get(t - 1, s - 2) : ext_zero();
        const int32_t top = ext_top(a0, a1, a2);
        const double w0 = ext_align(a0, top), w1 = ext_align(a1, top), w2 = ext_align(a2, top);
        const double total = w0 + w1 + w2;
        const double* prev = rho_b + (t - 1) * width;
        const double weighted = w0 * prev[s] + (s >= 1 ? w1 * prev[s - 1] : 0.0) + (s >= 2 ? w2 * prev[s - 2] : 0.0);
        mean = total > 0.0 ? weighted / total : 0.0;
      }
      rho_b[t * width + s] = mean + v_at(t, s);
    }
    __syncthreads();
  }
  // sigma: tangent of log beta; gamma_dot = gamma (rho + sigma - E_t[rho + sigma])
  const BackwardScratch sc = scratch_of(beta_m, beta_l, h_m, h_l, sigma, q, max_labels);
  const ExtNum z = total_mass(alpha, lat);
  init_final_states(lat, sc);
  const int64_t row_len = sc.h.width;
  double vg_acc = 0.0;
  int next = 0;
  for (int64_t t = lat.frames - 1; t >= 0; --t) {
    if (t < lat.frames - 1) {
      backward_step<scalar_t>(lp, v, t, batch, vocab, lat, sc, next);
      next = 1 - next;
    }
    double mean = 0.0;
    for (int64_t s = lat.lo(t) + threadIdx.x; s < lat.hi(t); s += blockDim.x) {
      const double gamma = ext_ratio(alpha.get(t, s), sc.beta.get(next, s), z);
      mean += gamma * (rho_b[t * width + s] + sc.sigma[next * row_len + s]);
      vg_acc += gamma * v_at(t, s);
    }
    mean = block_sum(mean);
    scalar_t* out = hv + (t * batch + blockIdx.x) * vocab;
    for (int64_t s = lat.lo(t) + threadIdx.x; s < lat.hi(t); s += blockDim.x) {
      const double gamma = ext_ratio(alpha.get(t, s), sc.beta.get(next, s), z);
      const double dev = rho_b[t * width + s] + sc.sigma[next * row_len + s];
      atomicAdd(out + lat.label(s), static_cast<scalar_t>(-g * gamma * (dev - mean)));
    }
    __syncthreads();
  }
  vg_acc = block_sum(vg_acc);
  if (threadIdx.x == 0) vg[blockIdx.x] = -vg_acc;
}

struct Shapes {
  int64_t T, B, V, U;
};

Shapes check(const at::Tensor& log_probs, const at::Tensor& targets, const at::Tensor& input_lengths,
             const at::Tensor& target_lengths) {
  TORCH_CHECK(log_probs.is_cuda() && log_probs.dim() == 3 && log_probs.is_contiguous(),
              "log_probs must be a contiguous CUDA tensor (T, B, V)");
  TORCH_CHECK(targets.is_cuda() && targets.dim() == 2 && targets.is_contiguous() &&
                  targets.scalar_type() == at::kLong && targets.size(0) == log_probs.size(1),
              "targets must be contiguous int64 (B, U) on the device of log_probs");
  for (const at::Tensor* len : {&input_lengths, &target_lengths})
    TORCH_CHECK(
        len->is_cuda() && len->scalar_type() == at::kLong && len->is_contiguous() && len->numel() == log_probs.size(1),
        "lengths must be contiguous int64 (B,) on the device of log_probs");
  return {log_probs.size(0), log_probs.size(1), log_probs.size(2), targets.size(1)};
}

// Zeroed extended-number scratch rows: (rows, 2U + 3) mantissas and levels.
std::pair<at::Tensor, at::Tensor> ext_rows(int64_t rows, int64_t max_labels, const at::Tensor& like) {
  return {at::zeros({rows, 2 * max_labels + 3}, like.options().dtype(at::kDouble)),
          at::full({rows, 2 * max_labels + 3}, kZeroLevel, like.options().dtype(at::kInt))};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> ctc_forward_cuda(const at::Tensor& log_probs, const at::Tensor& targets,
                                                                const at::Tensor& input_lengths,
                                                                const at::Tensor& target_lengths, int64_t blank) {
  const Shapes sh = check(log_probs, targets, input_lengths, target_lengths);
  const c10::cuda::CUDAGuard guard(log_probs.device());
  const int64_t width = 2 * sh.U + 1;
  at::Tensor alpha_m = at::zeros({sh.B, sh.T, width}, log_probs.options().dtype(at::kDouble));
  at::Tensor alpha_l = at::full({sh.B, sh.T, width}, kZeroLevel, log_probs.options().dtype(at::kInt));
  at::Tensor log_z = at::empty({sh.B}, log_probs.options().dtype(at::kDouble));
  if (sh.B == 0) return {log_z, alpha_m, alpha_l};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_forward_cuda", [&] {
    forward_kernel<scalar_t><<<sh.B, kThreads, 0, stream>>>(
        log_probs.data_ptr<scalar_t>(), targets.data_ptr<int64_t>(), input_lengths.data_ptr<int64_t>(),
        target_lengths.data_ptr<int64_t>(), sh.T, sh.B, sh.V, sh.U, blank, alpha_m.data_ptr<double>(),
        alpha_l.data_ptr<int32_t>(), log_z.data_ptr<double>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {log_z, alpha_m, alpha_l};
}

at::Tensor ctc_grad_cuda(const at::Tensor& grad_loss, const at::Tensor& log_probs, const at::Tensor& targets,
                         const at::Tensor& input_lengths, const at::Tensor& target_lengths, const at::Tensor& alpha_m,
                         const at::Tensor& alpha_l, int64_t blank) {
  const Shapes sh = check(log_probs, targets, input_lengths, target_lengths);
  const c10::cuda::CUDAGuard guard(log_probs.device());
  at::Tensor grad = at::zeros_like(log_probs);
  if (sh.B == 0) return grad;
  at::Tensor g = grad_loss.to(log_probs.device(), at::kDouble).contiguous();
  auto [beta_m, beta_l] = ext_rows(2 * sh.B, sh.U, log_probs);
  auto [h_m, h_l] = ext_rows(sh.B, sh.U, log_probs);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_grad_cuda", [&] {
    grad_kernel<scalar_t><<<sh.B, kThreads, 0, stream>>>(
        g.data_ptr<double>(), log_probs.data_ptr<scalar_t>(), targets.data_ptr<int64_t>(),
        input_lengths.data_ptr<int64_t>(), target_lengths.data_ptr<int64_t>(), sh.T, sh.B, sh.V, sh.U, blank,
        alpha_m.data_ptr<double>(), alpha_l.data_ptr<int32_t>(), beta_m.data_ptr<double>(), beta_l.data_ptr<int32_t>(),
        h_m.data_ptr<double>(), h_l.data_ptr<int32_t>(), grad.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad;
}

std::tuple<at::Tensor, at::Tensor> ctc_hvp_cuda(const at::Tensor& v_, const at::Tensor& grad_loss,
                                                const at::Tensor& log_probs, const at::Tensor& targets,
                                                const at::Tensor& input_lengths, const at::Tensor& target_lengths,
                                                const at::Tensor& alpha_m, const at::Tensor& alpha_l, int64_t blank) {
  const Shapes sh = check(log_probs, targets, input_lengths, target_lengths);
  const c10::cuda::CUDAGuard guard(log_probs.device());
  at::Tensor v = v_.to(log_probs.device(), log_probs.scalar_type()).contiguous();
  at::Tensor hv = at::zeros_like(log_probs);
  at::Tensor vg = at::zeros({sh.B}, log_probs.options().dtype(at::kDouble));
  if (sh.B == 0) return {hv, vg.to(log_probs.scalar_type())};
  at::Tensor g = grad_loss.to(log_probs.device(), at::kDouble).contiguous();
  at::Tensor rho = at::zeros({sh.B, sh.T, 2 * sh.U + 1}, log_probs.options().dtype(at::kDouble));
  auto [beta_m, beta_l] = ext_rows(2 * sh.B, sh.U, log_probs);
  auto [h_m, h_l] = ext_rows(sh.B, sh.U, log_probs);
  at::Tensor sigma = at::zeros({2 * sh.B, 2 * sh.U + 3}, log_probs.options().dtype(at::kDouble));
  at::Tensor q = at::zeros({sh.B, 2 * sh.U + 3}, log_probs.options().dtype(at::kDouble));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_hvp_cuda", [&] {
    hvp_kernel<scalar_t><<<sh.B, kThreads, 0, stream>>>(
        v.data_ptr<scalar_t>(), g.data_ptr<double>(), log_probs.data_ptr<scalar_t>(), targets.data_ptr<int64_t>(),
        input_lengths.data_ptr<int64_t>(), target_lengths.data_ptr<int64_t>(), sh.T, sh.B, sh.V, sh.U, blank,
        alpha_m.data_ptr<double>(), alpha_l.data_ptr<int32_t>(), rho.data_ptr<double>(), beta_m.data_ptr<double>(),
        beta_l.data_ptr<int32_t>(), h_m.data_ptr<double>(), h_l.data_ptr<int32_t>(), sigma.data_ptr<double>(),
        q.data_ptr<double>(), hv.data_ptr<scalar_t>(), vg.data_ptr<double>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {hv, vg.to(log_probs.scalar_type())};
}

}  // namespace metarecipe
