// Task-batched GRU sweeps on the CPU: per step one batched matrix product (at::bmm over the N tasks) and one
// fused pointwise pass over the N*B rows, parallel over rows; weight-sized results are one product over all
// steps after the sweep. Mirrors metarecipe/kernels/gru_torch.py line for line.
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <array>
#include <cmath>

#include "gru.h"

namespace metarecipe {
namespace {

struct Dims {
  int64_t t, n, b, h;
  int64_t rows() const { return n * b; }
};

Dims dims_of(const at::Tensor& hidden_sized) {  // (T, N, B, H)
  return {hidden_sized.size(0), hidden_sized.size(1), hidden_sized.size(2), hidden_sized.size(3)};
}

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + std::exp(-x));
}

// The five cached quantities of cell k (previous state, r, z, candidate, g_n); plane = T*N*B*H.
template <typename scalar_t>
inline std::array<scalar_t, 5> cached(const scalar_t* c, int64_t plane, int64_t k) {
  return {c[k], c[plane + k], c[2 * plane + k], c[3 * plane + k], c[4 * plane + k]};
}

// One sweep over time, parallel over tasks (each task's weights stay in cache for all its steps): per task n
// and step s in the sweep's order, before(n, s), then body(row, s) for the task's B rows, then after(n, s).
template <typename Before, typename Body, typename After>
void sweep(const Dims& d, bool forward_in_time, const Before& before, const Body& body, const After& after) {
  at::parallel_for(0, d.n, 1, [&](int64_t first, int64_t last) {
    c10::AutoGradMode no_grad(false);  // grad mode is thread-local: the pool's threads do not inherit the caller's
    for (int64_t n = first; n < last; ++n) {
      for (int64_t i = 0; i < d.t; ++i) {
        const int64_t s = forward_in_time ? i : d.t - 1 - i;
        before(n, s);
        for (int64_t row = n * d.b; row < (n + 1) * d.b; ++row) body(row, s);
        after(n, s);
      }
    }
  });
}

void nothing(int64_t, int64_t) {}

// out = a b for one task's slices (views, so the product lands in place).
void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::mm_out(out, a, b); }

// (T, N, B, D) -> (N, T*B, D) contiguous, for one product over all steps per task.
at::Tensor over_steps(const at::Tensor& x) { return x.permute({1, 0, 2, 3}).reshape({x.size(1), -1, x.size(3)}); }

// (N, T*B, D) -> (T, N, B, D).
at::Tensor from_over_steps(const at::Tensor& x, const Dims& d) {
  return x.reshape({d.n, d.t, d.b, x.size(2)}).permute({1, 0, 2, 3}).contiguous();
}

template <typename scalar_t>
void forward_impl(const at::Tensor& gates_x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& valid,
                  bool reverse, at::Tensor& out, at::Tensor& cache) {
  const Dims d = dims_of(out);
  const int64_t H = d.h, step_rows = d.rows();
  at::Tensor h = at::zeros({d.n, d.b, H}, out.options());
  at::Tensor g = at::empty({d.n, d.b, 3 * H}, out.options());
  const scalar_t* gx = gates_x.data_ptr<scalar_t>();
  const scalar_t* bias = b.data_ptr<scalar_t>();
  const scalar_t* mask = valid.data_ptr<scalar_t>();
  scalar_t* hp = h.data_ptr<scalar_t>();
  scalar_t* gp = g.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  scalar_t* cp = cache.data_ptr<scalar_t>();
  const int64_t plane = d.t * step_rows * H;  // one of the five cached quantities
  sweep(
      d, !reverse, [&](int64_t n, int64_t) { mm_into(g[n], h[n], w[n]); },
      [&](int64_t row, int64_t s) {
        const int64_t cell = s * step_rows + row;
        const scalar_t* x = gx + cell * 3 * H;
        const scalar_t* gr = gp + row * 3 * H;
        const scalar_t* br = bias + (row / d.b) * 3 * H;
        const scalar_t m = mask[cell];
        scalar_t* hr = hp + row * H;
        scalar_t* c = cp + cell * H;
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t r = sigmoid(x[j] + gr[j] + br[j]);
          const scalar_t z = sigmoid(x[H + j] + gr[H + j] + br[H + j]);
          const scalar_t g_n = gr[2 * H + j] + br[2 * H + j];
          const scalar_t cand = std::tanh(x[2 * H + j] + r * g_n);
          const scalar_t prev = hr[j];
          const scalar_t fresh = (cand + z * (prev - cand)) * m;
          c[j] = prev;
          c[plane + j] = r;
          c[2 * plane + j] = z;
          c[3 * plane + j] = cand;
          c[4 * plane + j] = g_n;
          op[cell * H + j] = fresh;
          hr[j] = prev + m * (fresh - prev);
        }
      },
      nothing);
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& w, const at::Tensor& valid, const at::Tensor& cache,
                   bool reverse, at::Tensor& d_x, at::Tensor& d_g, at::Tensor& gbar_all) {
  const Dims d = dims_of(grad_out);
  const int64_t H = d.h, step_rows = d.rows(), plane = d.t * step_rows * H;
  at::Tensor lam = at::zeros({d.n, d.b, H}, grad_out.options());    // adjoint of h, less the matrix term
  at::Tensor carry = at::zeros({d.n, d.b, H}, grad_out.options());  // the matrix term d_g W^T of the last step
  const at::Tensor w_t = w.transpose(1, 2);
  const scalar_t* gy = grad_out.data_ptr<scalar_t>();
  const scalar_t* mask = valid.data_ptr<scalar_t>();
  const scalar_t* c = cache.data_ptr<scalar_t>();
  scalar_t* lp = lam.data_ptr<scalar_t>();
  scalar_t* cr = carry.data_ptr<scalar_t>();
  scalar_t* dx = d_x.data_ptr<scalar_t>();
  scalar_t* dg = d_g.data_ptr<scalar_t>();
  scalar_t* gb = gbar_all.data_ptr<scalar_t>();
  sweep(
      d, reverse, nothing,
      [&](int64_t row, int64_t s) {
        const int64_t cell = s * step_rows + row;
        const scalar_t m = mask[cell];
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = cell * H + j;
          const auto [prev, r, z, cand, g_n] = cached(c, plane, k);
          const scalar_t lam_total = lp[row * H + j] + cr[row * H + j];
          const scalar_t gbar = (gy[k] + lam_total) * m;
          const scalar_t da_n = gbar * (1 - z) * (1 - cand * cand);
          const scalar_t da_z = gbar * (prev - cand) * z * (1 - z);
          const scalar_t da_r = da_n * g_n * r * (1 - r);
          scalar_t* x = dx + cell * 3 * H;
          scalar_t* g = dg + cell * 3 * H;
          x[j] = g[j] = da_r;
          x[H + j] = g[H + j] = da_z;
          x[2 * H + j] = da_n;
          g[2 * H + j] = da_n * r;
          gb[k] = gbar;
          lp[row * H + j] = gbar * z + lam_total * (1 - m);
        }
      },
      [&](int64_t n, int64_t s) { mm_into(carry[n], d_g[s][n], w_t[n]); });
}

template <typename scalar_t>
void tangent_sweep(const scalar_t* v_x, const at::Tensor& g_dot_h, const at::Tensor& w, const at::Tensor& valid,
                   const at::Tensor& cache, bool reverse, at::Tensor& y_dot, at::Tensor& h_dot_all,
                   at::Tensor& a_dot_all, at::Tensor& g_dot_n_all) {
  const Dims d = dims_of(y_dot);
  const int64_t H = d.h, step_rows = d.rows(), plane = d.t * step_rows * H;
  at::Tensor h_dot = at::zeros({d.n, d.b, H}, y_dot.options());
  at::Tensor g_dot = at::empty({d.n, d.b, 3 * H}, y_dot.options());
  const scalar_t* gdh = g_dot_h.defined() ? g_dot_h.data_ptr<scalar_t>() : nullptr;
  const scalar_t* mask = valid.data_ptr<scalar_t>();
  const scalar_t* c = cache.data_ptr<scalar_t>();
  scalar_t* hd = h_dot.data_ptr<scalar_t>();
  scalar_t* gd = g_dot.data_ptr<scalar_t>();
  scalar_t* yd = y_dot.data_ptr<scalar_t>();
  scalar_t* hda = h_dot_all.data_ptr<scalar_t>();
  scalar_t* ada = a_dot_all.data_ptr<scalar_t>();
  scalar_t* gdn = g_dot_n_all.data_ptr<scalar_t>();
  sweep(
      d, !reverse, [&](int64_t n, int64_t) { mm_into(g_dot[n], h_dot[n], w[n]); },
      [&](int64_t row, int64_t s) {
        const int64_t cell = s * step_rows + row;
        const scalar_t m = mask[cell];
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = cell * H + j;
          const auto [prev, r, z, cand, g_n] = cached(c, plane, k);
          scalar_t gate[3];
          for (int q = 0; q < 3; ++q) {
            gate[q] = gd[row * 3 * H + q * H + j] + (gdh ? gdh[cell * 3 * H + q * H + j] : 0);
          }
          const scalar_t a_r = (v_x ? v_x[cell * 3 * H + j] : 0) + gate[0];
          const scalar_t a_z = (v_x ? v_x[cell * 3 * H + H + j] : 0) + gate[1];
          const scalar_t r_dot = r * (1 - r) * a_r, z_dot = z * (1 - z) * a_z;
          const scalar_t a_n = (v_x ? v_x[cell * 3 * H + 2 * H + j] : 0) + r_dot * g_n + r * gate[2];
          const scalar_t cand_dot = (1 - cand * cand) * a_n;
          const scalar_t h_prev_dot = hd[row * H + j];
          const scalar_t fresh = z_dot * (prev - cand) + (1 - z) * cand_dot + z * h_prev_dot;
          yd[k] = fresh * m;
          hda[k] = h_prev_dot;
          gdn[k] = gate[2];
          scalar_t* a = ada + cell * 3 * H;
          a[j] = a_r;
          a[H + j] = a_z;
          a[2 * H + j] = a_n;
          hd[row * H + j] = h_prev_dot + m * (fresh - h_prev_dot);
        }
      },
      nothing);
}

template <typename scalar_t>
void adjoint_sweep(const at::Tensor& from_v_w, const at::Tensor& w, const at::Tensor& valid, const at::Tensor& cache,
                   const at::Tensor& gbar_all, const at::Tensor& h_dot_all, const at::Tensor& a_dot_all,
                   const at::Tensor& g_dot_n_all, bool reverse, at::Tensor& cot_x, at::Tensor& g_bar_all) {
  const Dims d = dims_of(gbar_all);
  const int64_t H = d.h, step_rows = d.rows(), plane = d.t * step_rows * H;
  at::Tensor lam = at::zeros({d.n, d.b, H}, gbar_all.options());
  at::Tensor carry = at::zeros({d.n, d.b, H}, gbar_all.options());
  const at::Tensor w_t = w.transpose(1, 2);
  const scalar_t* mask = valid.data_ptr<scalar_t>();
  const scalar_t* c = cache.data_ptr<scalar_t>();
  const scalar_t* gba = gbar_all.data_ptr<scalar_t>();
  const scalar_t* hda = h_dot_all.data_ptr<scalar_t>();
  const scalar_t* ada = a_dot_all.data_ptr<scalar_t>();
  const scalar_t* gdn = g_dot_n_all.data_ptr<scalar_t>();
  scalar_t* lp = lam.data_ptr<scalar_t>();
  scalar_t* cr = carry.data_ptr<scalar_t>();
  scalar_t* cx = cot_x.data_ptr<scalar_t>();
  scalar_t* gbo = g_bar_all.data_ptr<scalar_t>();
  sweep(
      d, reverse, nothing,
      [&](int64_t row, int64_t s) {
        const int64_t cell = s * step_rows + row;
        const scalar_t m = mask[cell];
        const scalar_t* a = ada + cell * 3 * H;
        for (int64_t j = 0; j < H; ++j) {
          const int64_t k = cell * H + j;
          const auto [prev, r, z, cand, g_n] = cached(c, plane, k);
          const scalar_t gbar = gba[k], a_r = a[j], a_z = a[H + j], a_n = a[2 * H + j];
          const scalar_t r_dot = r * (1 - r) * a_r, z_dot = z * (1 - z) * a_z;
          const scalar_t cand_dot = (1 - cand * cand) * a_n;
          const scalar_t d_cand = gbar * (1 - z);
          const scalar_t da_n = d_cand * (1 - cand * cand);
          const scalar_t lam_total = lp[row * H + j] + cr[row * H + j];
          const scalar_t hb = lam_total * m;
          const scalar_t cand_bar = hb * (1 - z) - gbar * z_dot - 2 * cand * d_cand * a_n;
          const scalar_t z_bar =
              hb * (prev - cand) + gbar * (hda[k] - cand_dot) + gbar * (prev - cand) * (1 - 2 * z) * a_z;
          const scalar_t an_bar = cand_bar * (1 - cand * cand);
          const scalar_t r_bar = an_bar * g_n + da_n * g_n * (1 - 2 * r) * a_r + da_n * gdn[k];
          const scalar_t ar_bar = r_bar * r * (1 - r), az_bar = z_bar * z * (1 - z);
          scalar_t* x = cx + cell * 3 * H;
          scalar_t* g = gbo + cell * 3 * H;
          x[j] = g[j] = ar_bar;
          x[H + j] = g[H + j] = az_bar;
          x[2 * H + j] = an_bar;
          g[2 * H + j] = an_bar * r + da_n * r_dot;
          lp[row * H + j] = hb * z + lam_total * (1 - m) + gbar * z_dot;
        }
      },
      [&](int64_t n, int64_t s) {
        mm_into(carry[n], g_bar_all[s][n], w_t[n]);
        if (from_v_w.defined()) carry[n].add_(from_v_w[s][n]);  // step s's h v_w term, for the state before it
      });
}

void check_inputs(const at::Tensor& w, std::initializer_list<const at::Tensor*> tensors) {
  TORCH_CHECK(w.dim() == 3 && w.size(2) == 3 * w.size(1), "gru: w must be (N, H, 3H)");
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(!t->is_cuda(), "gru: the cpp backend runs on the CPU");
    TORCH_CHECK(t->is_contiguous(), "gru: inputs must be contiguous");
    TORCH_CHECK(t->scalar_type() == w.scalar_type(), "gru: inputs must share one dtype");
  }
}

// The first-order adjoints of the recurrent pre-activations (T, N, B, 3H) rebuilt from gbar.
at::Tensor recurrent_adjoints(const at::Tensor& cache, const at::Tensor& gbar) {
  const at::Tensor prev = cache[0], r = cache[1], z = cache[2], cand = cache[3], g_n = cache[4];
  const at::Tensor da_n = gbar * (1 - z) * (1 - cand * cand);
  const at::Tensor da_z = gbar * (prev - cand) * z * (1 - z);
  const at::Tensor da_r = da_n * g_n * r * (1 - r);
  return at::cat({da_r, da_z, da_n * r}, -1);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gru_forward_cpu(const at::Tensor& gates_x, const at::Tensor& w, const at::Tensor& b,
                                                   const at::Tensor& valid, bool reverse) {
  check_inputs(w, {&gates_x, &w, &b, &valid});
  const int64_t t = gates_x.size(0), n = gates_x.size(1), batch = gates_x.size(2), h = w.size(1);
  at::Tensor out = at::empty({t, n, batch, h}, gates_x.options());
  at::Tensor cache = at::empty({5, t, n, batch, h}, gates_x.options());
  AT_DISPATCH_FLOATING_TYPES(gates_x.scalar_type(), "gru_forward_cpu",
                             [&] { forward_impl<scalar_t>(gates_x, w, b, valid, reverse, out, cache); });
  return {out, cache};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward_cpu(const at::Tensor& grad_out,
                                                                            const at::Tensor& w,
                                                                            const at::Tensor& valid,
                                                                            const at::Tensor& cache, bool reverse) {
  check_inputs(w, {&grad_out, &w, &valid, &cache});
  const Dims d = dims_of(grad_out);
  at::Tensor d_x = at::empty({d.t, d.n, d.b, 3 * d.h}, grad_out.options());
  at::Tensor d_g = at::empty_like(d_x);
  at::Tensor gbar = at::empty_like(grad_out);
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "gru_backward_cpu",
                             [&] { backward_impl<scalar_t>(grad_out, w, valid, cache, reverse, d_x, d_g, gbar); });
  at::Tensor d_w = at::bmm(over_steps(cache[0]).transpose(1, 2), over_steps(d_g));
  return {d_x, d_w, d_g.sum({0, 2}), gbar};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_double_backward_cpu(
    const std::optional<at::Tensor>& v_x, const std::optional<at::Tensor>& v_w, const std::optional<at::Tensor>& v_b,
    const at::Tensor& w, const at::Tensor& valid, const at::Tensor& cache, const at::Tensor& gbar, bool reverse) {
  check_inputs(w, {&w, &valid, &cache, &gbar});
  const Dims d = dims_of(gbar);
  const at::Tensor h_all = cache[0];
  at::Tensor g_dot_h;  // the tangent of the recurrent pre-activations from the primal state: h v_w + v_b
  if (v_w) g_dot_h = from_over_steps(at::bmm(over_steps(h_all), *v_w), d);
  if (v_b)
    g_dot_h = g_dot_h.defined() ? g_dot_h + v_b->unsqueeze(1)
                                : v_b->unsqueeze(1).expand({d.t, d.n, d.b, 3 * d.h}).contiguous();
  at::Tensor y_dot = at::empty_like(gbar), h_dot_all = at::empty_like(gbar), g_dot_n_all = at::empty_like(gbar);
  at::Tensor a_dot_all = at::empty({d.t, d.n, d.b, 3 * d.h}, gbar.options());
  at::Tensor d_g = recurrent_adjoints(cache, gbar);
  at::Tensor from_v_w;
  if (v_w) from_v_w = from_over_steps(at::bmm(over_steps(d_g), v_w->transpose(1, 2)), d);
  at::Tensor cot_x = at::empty_like(a_dot_all), g_bar_all = at::empty_like(a_dot_all);
  AT_DISPATCH_FLOATING_TYPES(gbar.scalar_type(), "gru_double_backward_cpu", [&] {
    tangent_sweep<scalar_t>(v_x ? v_x->data_ptr<scalar_t>() : nullptr, g_dot_h, w, valid, cache, reverse, y_dot,
                            h_dot_all, a_dot_all, g_dot_n_all);
    adjoint_sweep<scalar_t>(from_v_w, w, valid, cache, gbar, h_dot_all, a_dot_all, g_dot_n_all, reverse, cot_x,
                            g_bar_all);
  });
  at::Tensor cot_w = at::bmm(over_steps(h_all).transpose(1, 2), over_steps(g_bar_all)) +
                     at::bmm(over_steps(h_dot_all).transpose(1, 2), over_steps(d_g));
  return {y_dot, cot_x, cot_w, g_bar_all.sum({0, 2})};
}

}  // namespace metarecipe
