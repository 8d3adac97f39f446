"""The GRU recurrence's three sweeps in torch ops (any device): forward, backward (BPTT) and double backward.

Layouts are time-major: gates (T, N, B, 3H), valid (T, N, B), hidden-sized tensors (T, N, B, H); weights
w (N, H, 3H), biases (N, 3H). `cache` (5, T, N, B, H) holds, per step, the previous hidden state h, the gates
r, z, the candidate n and the recurrent part of the candidate's pre-activation g_n = (h W + b)_n.

Per step: g = h W + b;  r = s(x_r + g_r);  z = s(x_z + g_z);  n = tanh(x_n + r g_n);  h' = n + z (h - n)
(masked: padding frames keep h and output 0). The backward keeps gbar, the adjoint of h' per step, from which
the double backward rebuilds every first-order adjoint pointwise. The double backward is forward-over-reverse:
a tangent sweep forward in time along the incoming cotangents (v_x, v_w, v_b), then a reverse sweep for the
adjoint of the primal state with the second-order terms. Every weight-sized result is one batched matrix
product over all steps, never a product per step; docs/gru.md derives the formulas.
"""

from __future__ import annotations

import torch


def _steps(num_steps: int, reverse: bool, backward: bool) -> range:
    forward_in_time = reverse == backward
    return range(num_steps) if forward_in_time else range(num_steps - 1, -1, -1)


def _over_steps(x: torch.Tensor) -> torch.Tensor:
    """(T, N, B, D) -> (N, T*B, D), for one matrix product over all steps per task."""
    t, n, b, d = x.shape
    return x.permute(1, 0, 2, 3).reshape(n, t * b, d)


def forward(gates_x, w, b, valid, reverse: bool):
    """-> outputs (T, N, B, H), cache (5, T, N, B, H)."""
    t, n, batch, h3 = gates_x.shape
    hid = h3 // 3
    h = gates_x.new_zeros(n, batch, hid)
    out = gates_x.new_empty(t, n, batch, hid)
    cache = gates_x.new_empty(5, t, n, batch, hid)
    for s in _steps(t, reverse, backward=False):
        g = torch.baddbmm(b.unsqueeze(1), h, w)
        x, m = gates_x[s], valid[s].unsqueeze(-1)
        r = torch.sigmoid(x[..., :hid] + g[..., :hid])
        z = torch.sigmoid(x[..., hid:2 * hid] + g[..., hid:2 * hid])
        cand = torch.tanh(x[..., 2 * hid:] + r * g[..., 2 * hid:])
        new = (cand + z * (h - cand)) * m
        cache[:, s] = torch.stack([h, r, z, cand, g[..., 2 * hid:]])
        out[s] = new
        h = h + m * (new - h)
    return out, cache


def _first_order_adjoints(gbar, h, r, z, cand, g_n):
    """Pointwise adjoints of one step from gbar, the adjoint of h': (da_r, da_z, da_n, dg_n)."""
    da_n = gbar * (1 - z) * (1 - cand * cand)
    da_z = gbar * (h - cand) * z * (1 - z)
    da_r = da_n * g_n * r * (1 - r)
    return da_r, da_z, da_n, da_n * r


def backward(grad_out, w, valid, cache, reverse: bool):
    """grad_out (T, N, B, H) -> d gates_x (T, N, B, 3H), d w (N, H, 3H), d b (N, 3H), gbar (T, N, B, H)."""
    t, n, batch, hid = grad_out.shape
    d_x = grad_out.new_empty(t, n, batch, 3 * hid)
    d_g = grad_out.new_empty(t, n, batch, 3 * hid)
    gbar_all = grad_out.new_empty(t, n, batch, hid)
    lam = grad_out.new_zeros(n, batch, hid)
    w_t = w.transpose(1, 2)
    for s in _steps(t, reverse, backward=True):
        h, r, z, cand, g_n = cache[:, s]
        m = valid[s].unsqueeze(-1)
        gbar = (grad_out[s] + lam) * m
        da_r, da_z, da_n, dg_n = _first_order_adjoints(gbar, h, r, z, cand, g_n)
        d_x[s] = torch.cat([da_r, da_z, da_n], dim=-1)
        d_g[s] = torch.cat([da_r, da_z, dg_n], dim=-1)
        gbar_all[s] = gbar
        lam = gbar * z + lam * (1 - m) + torch.bmm(d_g[s], w_t)
    d_w = torch.bmm(_over_steps(cache[0]).transpose(1, 2), _over_steps(d_g))
    return d_x, d_w, d_g.sum(dim=(0, 2)), gbar_all


def double_backward(v_x, v_w, v_b, w, valid, cache, gbar_all, reverse: bool):
    """Backward of `backward` for cotangents v_x (T, N, B, 3H), v_w (N, H, 3H), v_b (N, 3H) of its outputs:
    -> cotangents of grad_out (T, N, B, H), gates_x (T, N, B, 3H), w (N, H, 3H), b (N, 3H)."""
    t, n, batch, hid = gbar_all.shape
    h_all = cache[0]
    tangent_in = v_x if v_x is not None else gbar_all.new_zeros(t, n, batch, 3 * hid)
    # tangent of g from the primal state: h v_w + v_b, all steps at once
    g_dot_h = gbar_all.new_zeros(t, n, batch, 3 * hid)
    if v_w is not None:
        g_dot_h = torch.bmm(_over_steps(h_all), v_w).reshape(n, t, batch, 3 * hid).permute(1, 0, 2, 3)
    if v_b is not None:
        g_dot_h = g_dot_h + v_b.unsqueeze(1)
    y_dot = gbar_all.new_empty(t, n, batch, hid)
    h_dot_all = gbar_all.new_empty(t, n, batch, hid)
    a_dot_all = gbar_all.new_empty(t, n, batch, 3 * hid)  # tangents of the pre-activations a_r, a_z, a_n
    g_dot_n_all = gbar_all.new_empty(t, n, batch, hid)
    h_dot = gbar_all.new_zeros(n, batch, hid)
    for s in _steps(t, reverse, backward=False):
        h, r, z, cand, g_n = cache[:, s]
        m = valid[s].unsqueeze(-1)
        g_dot = torch.baddbmm(g_dot_h[s], h_dot, w)
        a_dot_rz = tangent_in[s, ..., : 2 * hid] + g_dot[..., : 2 * hid]
        r_dot = r * (1 - r) * a_dot_rz[..., :hid]
        z_dot = z * (1 - z) * a_dot_rz[..., hid:]
        a_dot_n = tangent_in[s, ..., 2 * hid:] + r_dot * g_n + r * g_dot[..., 2 * hid:]
        cand_dot = (1 - cand * cand) * a_dot_n
        new_dot = z_dot * (h - cand) + (1 - z) * cand_dot + z * h_dot
        y_dot[s] = new_dot * m
        h_dot_all[s], g_dot_n_all[s] = h_dot, g_dot[..., 2 * hid:]
        a_dot_all[s] = torch.cat([a_dot_rz, a_dot_n], dim=-1)
        h_dot = h_dot + m * (new_dot - h_dot)

    da_r, da_z, _, dg_n = _first_order_adjoints(gbar_all, *cache)
    d_g = torch.cat([da_r, da_z, dg_n], dim=-1)
    from_v_w = None
    if v_w is not None:
        from_v_w = torch.bmm(_over_steps(d_g), v_w.transpose(1, 2)).reshape(n, t, batch, hid).permute(1, 0, 2, 3)
    cot_x = gbar_all.new_empty(t, n, batch, 3 * hid)
    g_bar_all = gbar_all.new_empty(t, n, batch, 3 * hid)
    lam = gbar_all.new_zeros(n, batch, hid)
    w_t = w.transpose(1, 2)
    for s in _steps(t, reverse, backward=True):
        h, r, z, cand, g_n = cache[:, s]
        gbar, m = gbar_all[s], valid[s].unsqueeze(-1)
        a_dot_r, a_dot_z, a_dot_n = a_dot_all[s].split(hid, dim=-1)
        r_dot, z_dot = r * (1 - r) * a_dot_r, z * (1 - z) * a_dot_z
        cand_dot = (1 - cand * cand) * a_dot_n
        d_cand = gbar * (1 - z)
        da_n = d_cand * (1 - cand * cand)
        hb = lam * m
        cand_bar = hb * (1 - z) - gbar * z_dot - 2 * cand * d_cand * a_dot_n
        z_bar = hb * (h - cand) + gbar * (h_dot_all[s] - cand_dot) + gbar * (h - cand) * (1 - 2 * z) * a_dot_z
        an_bar = cand_bar * (1 - cand * cand)
        r_bar = an_bar * g_n + da_n * g_n * (1 - 2 * r) * a_dot_r + da_n * g_dot_n_all[s]
        gn_bar = an_bar * r + da_n * r_dot
        ar_bar, az_bar = r_bar * r * (1 - r), z_bar * z * (1 - z)
        cot_x[s] = torch.cat([ar_bar, az_bar, an_bar], dim=-1)
        g_bar_all[s] = torch.cat([ar_bar, az_bar, gn_bar], dim=-1)
        lam = hb * z + lam * (1 - m) + gbar * z_dot + torch.bmm(g_bar_all[s], w_t)
        if from_v_w is not None:
            lam = lam + from_v_w[s]
    cot_w = (torch.bmm(_over_steps(h_all).transpose(1, 2), _over_steps(g_bar_all))
             + torch.bmm(_over_steps(h_dot_all).transpose(1, 2), _over_steps(d_g)))
    return y_dot, cot_x, cot_w, g_bar_all.sum(dim=(0, 2))
