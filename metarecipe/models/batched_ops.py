"""Task-batched layers: every op runs N tasks at once from stacked per-task parameters (leading dimension N).

Inputs carry the task dimension first: activations (N, B, T, D), parameters (N, ...). Written in plain torch
ops, so autograd differentiates them to any order (MAML's second order included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(N, B, T, I) x weight (N, I, O) + bias (N, O) -> (N, B, T, O)."""
    n, b, t, i = x.shape
    out = torch.bmm(x.reshape(n, b * t, i), weight).reshape(n, b, t, -1)
    return out if bias is None else out + bias[:, None, None, :]


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension with per-task gain and bias (N, D): (N, B, T, D) -> same."""
    normed = F.layer_norm(x, x.shape[-1:], eps=eps)
    return normed * weight[:, None, None, :] + bias[:, None, None, :]


def conv2d_stride2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """3x3 convolution with stride 2, no padding, per task through a grouped convolution.

    x (N, B, C_in, T, F), weight (N, C_out, C_in, 3, 3), bias (N, C_out) -> (N, B, C_out, T', F')."""
    n, b, c_in, t, f = x.shape
    c_out = weight.shape[1]
    grouped = x.permute(1, 0, 2, 3, 4).reshape(b, n * c_in, t, f)
    out = F.conv2d(grouped, weight.reshape(n * c_out, c_in, 3, 3), bias.reshape(n * c_out), stride=2, groups=n)
    return out.reshape(b, n, c_out, *out.shape[-2:]).permute(1, 0, 2, 3, 4)


def subsampled_lengths(lengths: torch.Tensor, times: int = 2) -> torch.Tensor:
    """Frames left after `times` 3x3 stride-2 unpadded convolutions."""
    for _ in range(times):
        lengths = torch.div(lengths - 3, 2, rounding_mode="floor") + 1
    return lengths.clamp(min=0)


def _gru_steps(gates_x, valid, w_hh, b_hh, reverse: bool, keep: bool):
    """The GRU recurrence over precomputed input gates; with `keep`, also the per-step values the backward
    needs. gates_x (N, B, T, 3H), valid (N, B, T, 1) -> outputs (N, B, T, H) [, saved]."""
    n, b, t, _ = gates_x.shape
    hidden = w_hh.shape[1]
    h = gates_x.new_zeros(n, b, hidden)
    bias = b_hh.unsqueeze(1)
    outputs = [None] * t
    saved = {k: [None] * t for k in ("h_prev", "r", "z", "cand", "gh_n")} if keep else None
    for step in (range(t - 1, -1, -1) if reverse else range(t)):
        gx = gates_x[:, :, step]
        gh = torch.baddbmm(bias, h, w_hh)
        r, z = torch.sigmoid(gx[..., : 2 * hidden] + gh[..., : 2 * hidden]).chunk(2, dim=-1)
        cand = torch.tanh(torch.addcmul(gx[..., 2 * hidden:], r, gh[..., 2 * hidden:]))
        new = torch.lerp(cand, h, z) * valid[:, :, step]  # (1 - z) cand + z h; zero past the length
        if keep:
            for key, value in (("h_prev", h), ("r", r), ("z", z), ("cand", cand), ("gh_n", gh[..., 2 * hidden:])):
                saved[key][step] = value
        h = new + h * (1 - valid[:, :, step])  # padding frames leave h as it was
        outputs[step] = new
    out = torch.stack(outputs, dim=2)
    return (out, {k: torch.stack(v, dim=2) for k, v in saved.items()}) if keep else out


class _GRUFunction(torch.autograd.Function):
    """First-order GRU recurrence: the forward records no graph, the backward is explicit backpropagation
    through time with one matrix product for the recurrent weight gradient (instead of one per step)."""

    @staticmethod
    def forward(ctx, gates_x, w_hh, b_hh, valid, reverse):
        out, saved = _gru_steps(gates_x, valid, w_hh, b_hh, reverse, keep=True)
        ctx.save_for_backward(w_hh, valid, *saved.values())
        ctx.reverse = reverse
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: the saved gates carry no graph, refuse
            raise RuntimeError("the first-order GRU recurrence has no second derivative; run the model with "
                               "twice_differentiable=True to differentiate its gradient")
        w_hh, valid, h_prev, r, z, cand, gh_n = ctx.saved_tensors
        n, b, t, hidden = h_prev.shape
        dh = grad_out.new_zeros(n, b, hidden)
        d_gates = grad_out.new_empty(n, b, t, 3 * hidden)  # equal to the gradient of gh for r and z
        d_gh_n = grad_out.new_empty(n, b, t, hidden)
        w_t = w_hh.transpose(1, 2)
        for step in (range(t) if ctx.reverse else range(t - 1, -1, -1)):
            v = valid[:, :, step]
            g_new = (grad_out[:, :, step] + dh) * v
            z_s, cand_s, r_s = z[:, :, step], cand[:, :, step], r[:, :, step]
            d_pre_n = g_new * (1 - z_s) * (1 - cand_s**2)
            d_pre_r = d_pre_n * gh_n[:, :, step] * r_s * (1 - r_s)
            d_pre_z = g_new * (h_prev[:, :, step] - cand_s) * z_s * (1 - z_s)
            d_gates[:, :, step] = torch.cat([d_pre_r, d_pre_z, d_pre_n], dim=-1)
            d_gh_n[:, :, step] = d_pre_n * r_s
            d_gh = torch.cat([d_pre_r, d_pre_z, d_gh_n[:, :, step]], dim=-1)
            dh = g_new * z_s + dh * (1 - v) + torch.bmm(d_gh, w_t)
        d_gh_all = torch.cat([d_gates[..., : 2 * hidden], d_gh_n], dim=-1).reshape(n, b * t, 3 * hidden)
        d_w = torch.bmm(h_prev.reshape(n, b * t, hidden).transpose(1, 2), d_gh_all)
        return d_gates, d_w, d_gh_all.sum(dim=1), None, None


def gru_direction(x: torch.Tensor, lengths: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                  b_ih: torch.Tensor, b_hh: torch.Tensor, reverse: bool,
                  twice_differentiable: bool = True) -> torch.Tensor:
    """One direction of a GRU (PyTorch's gate order r, z, n) over N tasks at once.

    x (N, B, T, I), lengths (N, B), w_ih (N, I, 3H), w_hh (N, H, 3H), b_ih and b_hh (N, 3H) ->
    outputs (N, B, T, H), zero past each length; a reversed direction starts at each sequence's last frame.
    twice_differentiable=False uses the faster first-order recurrence (_GRUFunction)."""
    t = x.shape[2]
    gates_x = linear(x, w_ih, b_ih)  # (N, B, T, 3H): input projections of every frame at once
    valid = (torch.arange(t, device=x.device) < lengths.unsqueeze(-1)).unsqueeze(-1).to(x.dtype)  # (N, B, T, 1)
    if twice_differentiable:
        return _gru_steps(gates_x, valid, w_hh, b_hh, reverse, keep=False)
    return _GRUFunction.apply(gates_x, w_hh, b_hh, valid, reverse)
