"""CTC loss on the CPU with numba: the algorithm of ``csrc/ctc_loss_cpu.cpp`` (docs/ctc_loss.md).

Lattice values are extended-range numbers ``m * 2^(256 * level)`` held as a float64 mantissa and an int
level (``csrc/ext_num.h``). Three entry points mirror the compiled ops: ``forward`` (losses and the saved
alpha), ``grad`` (gradient w.r.t. log_probs) and ``hvp`` (backward of ``grad``: the Hessian-vector product).
Parallel over the batch with ``prange``.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import torch

ZERO_LEVEL = -(1 << 29)
LEVEL_LOG = 256.0 * math.log(2.0)
LOG_LIMIT = 1e6
UP = 2.0**256
DOWN = 2.0**-256

if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
    # Share torch's OpenMP thread pool instead of oversubscribing the cores with a second one.
    try:
        from numba.np.ufunc import omppool  # noqa: F401

        numba.config.THREADING_LAYER = "omp"
    except ImportError:
        pass

_jit = numba.njit(cache=True, nogil=True)
_pjit = numba.njit(cache=True, nogil=True, parallel=True)


@_jit
def _normalize(m, level):
    """Brings m * 2^(256 level) back into the mantissa range [2^-256, 2^256); m in [2^-512, 2^512)."""
    if m >= UP:
        return m * DOWN, level + 1
    if m < DOWN:
        if m > 0.0:
            return m * UP, level - 1
        return 0.0, ZERO_LEVEL
    return m, level


@_jit
def _mul(am, al, bm, bl):
    return _normalize(am * bm, al + bl)


@_jit
def _level_factor(d):
    """2^(-256 d) for a level difference d >= 0; 0 from d = 3 on."""
    return 1.0 if d == 0 else (DOWN if d == 1 else (DOWN * DOWN if d == 2 else 0.0))


@_jit
def _align(m, level, top):
    return m * _level_factor(top - level)


@_jit
def _log(m, level):
    return math.log(m) + level * LEVEL_LOG if m > 0.0 else -np.inf


@_jit
def _ratio(am, al, bm, bl, zm, zl):
    """a * b / z as a float, for a posterior <= 1 (level difference at most 2; below -3 it is < 2^-256)."""
    d = al + bl - zl
    if d >= 0:
        scale = 1.0 if d == 0 else (UP if d == 1 else UP * UP)
    else:
        scale = DOWN if d == -1 else (DOWN * DOWN if d == -2 else (DOWN * DOWN * DOWN if d == -3 else 0.0))
    return am * bm / zm * scale


@_jit
def _lattice(targets, num_labels, blank):
    """labels (S,) and skip (S + 2,) of the extended sequence blank, l1, blank, ..., blank."""
    num_states = 2 * num_labels + 1
    labels = np.full(num_states, blank, dtype=np.int64)
    skip = np.zeros(num_states + 2, dtype=np.bool_)
    for j in range(num_labels):
        labels[2 * j + 1] = targets[j]
        if j > 0 and targets[j] != targets[j - 1]:
            skip[2 * j + 1] = True
    return labels, skip


@_jit
def _feasible(labels, num_frames):
    need = (labels.shape[0] - 1) // 2
    for s in range(3, labels.shape[0], 2):
        if labels[s] == labels[s - 2]:
            need += 1
    return num_frames >= need


@_jit
def _total_mass(am, al, num_frames, num_states):
    """Z = alpha over the final states at the last frame, as (mantissa, level)."""
    if num_frames == 0:
        return 1.0, 0
    t, s = num_frames - 1, num_states - 1
    if num_states == 1:
        return am[t, 0], al[t, 0]
    top = max(al[t, s], al[t, s - 1])
    return _normalize(_align(am[t, s], al[t, s], top) + _align(am[t, s - 1], al[t, s - 1], top), top)


@_jit
def _exp(x):
    """exp(x) as (mantissa in [2^-128, 2^128], level); x <= -1e6 is impossible, x >= 1e6 or NaN gives NaN."""
    if x <= -LOG_LIMIT:
        return 0.0, ZERO_LEVEL
    if not x < LOG_LIMIT:
        return np.nan, 0
    k = int(x / LEVEL_LOG + (0.5 if x >= 0.0 else -0.5))
    return math.exp(x - k * LEVEL_LOG), k


@_jit
def _emission_plan(labels, vocab):
    """(source, column): the vocabulary entries exp is taken of at each frame, min(V, U + 1) of them, and
    the entry of each state."""
    S = labels.shape[0]
    if vocab <= (S - 1) // 2 + 1:
        return np.arange(vocab), labels.copy()
    source = np.empty((S + 1) // 2, dtype=np.int64)
    source[0] = labels[0]
    column = np.zeros(S, dtype=np.int64)
    for s in range(1, S, 2):
        source[(s + 1) // 2] = labels[s]
        column[s] = (s + 1) // 2
    return source, column


@_jit
def _load_emissions(row, source, em, el):
    for c in range(source.shape[0]):
        em[c], el[c] = _exp(float(row[source[c]]))


@_jit
def _window(t, num_frames, num_states):
    """States [lo, hi) at frame t reachable from the start that can still reach the end."""
    return max(0, num_states - 2 * (num_frames - t)), min(num_states, 2 * (t + 1))


@_jit
def _forward_sample(lp, b, labels, skip, num_frames, am, al):
    """alpha of sample b into am/al (T, width), reading frame t - 1 back from the table itself."""
    S = labels.shape[0]
    source, column = _emission_plan(labels, lp.shape[2])
    em, el = np.empty(source.shape[0]), np.empty(source.shape[0], dtype=np.int64)
    for t in range(num_frames):
        _load_emissions(lp[t, b], source, em, el)
        lo, hi = _window(t, num_frames, S)
        for s in range(lo, hi):
            if t == 0:  # a virtual frame -1 in state 0 lets frame 0 enter states 0 and 1
                u, top = 1.0, 0
            else:
                l0, m0 = al[t - 1, s], am[t - 1, s]
                l1, m1 = ZERO_LEVEL, 0.0
                l2, m2 = ZERO_LEVEL, 0.0
                if s >= 1:
                    l1, m1 = al[t - 1, s - 1], am[t - 1, s - 1]
                if skip[s]:
                    l2, m2 = al[t - 1, s - 2], am[t - 1, s - 2]
                top = max(l0, l1, l2)
                u = m0 * _level_factor(top - l0) + m1 * _level_factor(top - l1) + m2 * _level_factor(top - l2)
            c = column[s]
            am[t, s], al[t, s] = _normalize(u * em[c], top + el[c])


@_pjit
def _forward(lp, targets, input_lengths, target_lengths, blank, order, am, al, log_z):
    for i in numba.prange(order.shape[0]):
        b = order[i]
        labels, skip = _lattice(targets[b], target_lengths[b], blank)
        T, S = input_lengths[b], labels.shape[0]
        if not _feasible(labels, T):
            log_z[b] = -np.inf
            continue
        _forward_sample(lp, b, labels, skip, T, am[b], al[b])
        zm, zl = _total_mass(am[b], al[b], T, S)
        log_z[b] = _log(zm, zl)


@_jit
def _beta_step(t, lp_row, v_row, labels, skip, num_frames, plan, nm, nl, sig_next, cm, cl, sig_cur, hm, hl, q):
    """One frame back: beta/sigma at t from beta/sigma at t + 1 (next); lp_row and v_row (or empty) are
    frame t + 1; plan = (source, column, em, el) from _emission_plan."""
    S = labels.shape[0]
    source, column, em, el = plan
    _load_emissions(lp_row, source, em, el)
    lo1, hi1 = _window(t + 1, num_frames, S)
    for s in range(lo1, hi1):
        c = column[s]
        hm[s], hl[s] = _mul(nm[s], nl[s], em[c], el[c])
        q[s] = sig_next[s] + (float(v_row[labels[s]]) if v_row.shape[0] else 0.0)
    lo, hi = _window(t, num_frames, S)
    for s in range(lo, hi):
        m2, l2 = (hm[s + 2], hl[s + 2]) if skip[s + 2] else (0.0, ZERO_LEVEL)
        top = max(hl[s], hl[s + 1], l2)
        w0, w1, w2 = _align(hm[s], hl[s], top), _align(hm[s + 1], hl[s + 1], top), _align(m2, l2, top)
        total = w0 + w1 + w2
        cm[s], cl[s] = _normalize(total, top)
        sig_cur[s] = (w0 * q[s] + w1 * q[s + 1] + w2 * q[s + 2]) / total if total > 0.0 else 0.0


@_jit
def _beta_buffers(labels, vocab):
    S = labels.shape[0]
    nm, cm, hm = np.zeros(S + 2), np.zeros(S + 2), np.zeros(S + 2)
    nl = np.full(S + 2, ZERO_LEVEL, dtype=np.int64)
    cl, hl = nl.copy(), nl.copy()
    nm[S - 1], nl[S - 1] = 1.0, 0
    if S > 1:
        nm[S - 2], nl[S - 2] = 1.0, 0
    source, column = _emission_plan(labels, vocab)
    plan = (source, column, np.empty(source.shape[0]), np.empty(source.shape[0], dtype=np.int64))
    return nm, nl, cm, cl, hm, hl, plan


@_pjit
def _grad(grad_loss, lp, targets, input_lengths, target_lengths, blank, order, am, al, out):
    no_v = np.empty(0, dtype=out.dtype)
    for i in numba.prange(order.shape[0]):
        b = order[i]
        labels, skip = _lattice(targets[b], target_lengths[b], blank)
        T, S = input_lengths[b], labels.shape[0]
        if not _feasible(labels, T) or grad_loss[b] == 0.0:
            continue
        zm, zl = _total_mass(am[b], al[b], T, S)
        nm, nl, cm, cl, hm, hl, plan = _beta_buffers(labels, lp.shape[2])
        sig_n, sig_c, q = np.zeros(S + 2), np.zeros(S + 2), np.zeros(S + 2)
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                _beta_step(t, lp[t + 1, b], no_v, labels, skip, T, plan, nm, nl, sig_n, cm, cl, sig_c, hm, hl, q)
                nm, cm, nl, cl = cm, nm, cl, nl
            lo, hi = _window(t, T, S)
            blank_sum = 0.0
            for s in range(lo, hi):
                gamma = _ratio(am[b, t, s], al[b, t, s], nm[s], nl[s], zm, zl)
                if s % 2 == 0:
                    blank_sum += gamma
                else:
                    out[t, b, labels[s]] -= grad_loss[b] * gamma
            out[t, b, blank] -= grad_loss[b] * blank_sum


@_pjit
def _hvp(v, grad_loss, lp, targets, input_lengths, target_lengths, blank, order, am, al, out, vg):
    for i in numba.prange(order.shape[0]):
        b = order[i]
        labels, skip = _lattice(targets[b], target_lengths[b], blank)
        T, S = input_lengths[b], labels.shape[0]
        if not _feasible(labels, T):
            continue
        zm, zl = _total_mass(am[b], al[b], T, S)
        # rho[t, s + 2]: tangent of log alpha_t(s) (expected sum of v over partial alignments)
        rho = np.zeros((max(T, 1), S + 2))
        lo, hi = _window(0, T, S)
        for s in range(lo, hi):
            rho[0, s + 2] = float(v[0, b, labels[s]])
        for t in range(1, T):
            lo, hi = _window(t, T, S)
            for s in range(lo, hi):
                top = al[b, t - 1, s]
                w1 = w2 = 0.0
                if s >= 1:
                    top = max(top, al[b, t - 1, s - 1])
                if s >= 2 and skip[s]:
                    top = max(top, al[b, t - 1, s - 2])
                w0 = _align(am[b, t - 1, s], al[b, t - 1, s], top)
                if s >= 1:
                    w1 = _align(am[b, t - 1, s - 1], al[b, t - 1, s - 1], top)
                if s >= 2 and skip[s]:
                    w2 = _align(am[b, t - 1, s - 2], al[b, t - 1, s - 2], top)
                total = w0 + w1 + w2
                mean = (w0 * rho[t - 1, s + 2] + w1 * rho[t - 1, s + 1] + w2 * rho[t - 1, s]) / total \
                    if total > 0.0 else 0.0
                rho[t, s + 2] = mean + float(v[t, b, labels[s]])
        # sigma: tangent of log beta; gamma_dot = gamma (rho + sigma - E_t[rho + sigma])
        nm, nl, cm, cl, hm, hl, plan = _beta_buffers(labels, lp.shape[2])
        sig_n, sig_c, q = np.zeros(S + 2), np.zeros(S + 2), np.zeros(S + 2)
        gamma, dev = np.zeros(S), np.zeros(S)
        vg_acc = 0.0
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                _beta_step(t, lp[t + 1, b], v[t + 1, b], labels, skip, T, plan, nm, nl, sig_n, cm, cl, sig_c, hm,
                           hl, q)
                nm, cm, nl, cl, sig_n, sig_c = cm, nm, cl, nl, sig_c, sig_n
            lo, hi = _window(t, T, S)
            mean = 0.0
            for s in range(lo, hi):
                gamma[s] = _ratio(am[b, t, s], al[b, t, s], nm[s], nl[s], zm, zl)
                dev[s] = rho[t, s + 2] + sig_n[s]
                mean += gamma[s] * dev[s]
                vg_acc += gamma[s] * float(v[t, b, labels[s]])
            for s in range(lo, hi):
                out[t, b, labels[s]] -= grad_loss[b] * gamma[s] * (dev[s] - mean)
        vg[b] = -vg_acc


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


def _schedule(input_lengths, target_lengths) -> np.ndarray:
    """Sample order for the parallel loops, longest lattices first, taken one at a time by free threads
    (utterance lengths vary: fixed chunks of samples would leave threads idle). Runs on as many threads as
    torch uses (torch.set_num_threads)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    numba.set_parallel_chunksize(1)
    cost = input_lengths * (2 * target_lengths + 1)
    return np.argsort(-cost, kind="stable")


def forward(log_probs, targets, input_lengths, target_lengths, blank):
    """Same contract as ``metarecipe._C.ctc_forward``: (log_z, alpha_m, alpha_l)."""
    num_frames, batch, _ = log_probs.shape
    am = np.zeros((batch, num_frames, 2 * targets.shape[1] + 1))
    al = np.full(am.shape, ZERO_LEVEL, dtype=np.int32)
    log_z = np.empty(batch)
    in_len, tgt_len = _np(input_lengths), _np(target_lengths)
    _forward(_np(log_probs), _np(targets), in_len, tgt_len, blank, _schedule(in_len, tgt_len), am, al, log_z)
    return torch.from_numpy(log_z), torch.from_numpy(am), torch.from_numpy(al)


def grad(grad_loss, log_probs, targets, input_lengths, target_lengths, alpha_m, alpha_l, blank):
    """Same contract as ``metarecipe._C.ctc_grad``."""
    lp = _np(log_probs)
    out = np.zeros(lp.shape, dtype=lp.dtype)
    in_len, tgt_len = _np(input_lengths), _np(target_lengths)
    _grad(_np(grad_loss).astype(np.float64), lp, _np(targets), in_len, tgt_len, blank, _schedule(in_len, tgt_len),
          _np(alpha_m), _np(alpha_l), out)
    return torch.from_numpy(out)


def hvp(v, grad_loss, log_probs, targets, input_lengths, target_lengths, alpha_m, alpha_l, blank):
    """Same contract as ``metarecipe._C.ctc_hvp``."""
    lp = _np(log_probs)
    out = np.zeros(lp.shape, dtype=lp.dtype)
    vg = np.zeros(lp.shape[1])
    in_len, tgt_len = _np(input_lengths), _np(target_lengths)
    _hvp(_np(v.to(log_probs.dtype)), _np(grad_loss).astype(np.float64), lp, _np(targets), in_len, tgt_len, blank,
         _schedule(in_len, tgt_len), _np(alpha_m), _np(alpha_l), out, vg)
    return torch.from_numpy(out), torch.from_numpy(vg).to(log_probs.dtype)
