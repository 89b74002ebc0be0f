"""Chunked (block-parallel) WKV for prompts: the same numbers as the token-by-token
recurrences of ``wkv.py`` (to fp32 rounding), with the work inside a chunk done as matmuls.

Notation (one batch row, one head; rows of S = key dim, columns = value dim): inside a chunk
of C positions starting from state S0, ``A_t = Σ_{j<=t} log w_j`` (inclusive, A_{-1} = 0).

* RWKV-6: ``S_{t-1} = diag(e^{A_{t-1}}) S0 + Σ_{j<t} diag(e^{A_{t-1}-A_j}) k_jᵀv_j``, so
  ``Y = (r⊙e^{A_ex}) S0 + tril₋₁((r⊙e^{A_ex})(k⊙e^{-A})ᵀ) V + diag(r·(u⊙k)) V`` and
  ``S_C = diag(e^{A_C}) S0 + (k⊙e^{A_C-A})ᵀ V``.
* RWKV-7 (generalised delta rule): write ``u_t = S_{t-1}ᵀα_t`` (the removed value); then
  ``S_t = diag(w_t) S_{t-1} + b_t u_tᵀ + k_t v_tᵀ`` is a per-channel-decay recurrence with
  two rank-1 writes, and ``U = (I - tril₋₁(α̃ b̂ᵀ))⁻¹ (α̃ S0 + tril₋₁(α̃ k̂ᵀ) V)`` with
  ``α̃ = α⊙e^{A_ex}``, ``b̂ = b⊙e^{-A}``, ``k̂ = k⊙e^{-A}`` (the UT/WY transform of
  flash-linear-attention's chunk_dplr / chunk_rwkv7). Writing ``U = W S0 + U0``, each chunk is
  ``Y = Q S0 + Y0`` and ``S_C = G S0 + H0`` with Q, Y0, G, H0 computed for every chunk at
  once; only the d×d state update runs chunk after chunk.

Exponents: the per-channel factors ``e^{±A}`` are taken relative to the chunk start. They
stay within ``e^{±MAX_SPAN}`` (far from overflow and subnormals, and from products of a huge
and a tiny factor) when the log-decay inside
every chunk spans at most MAX_SPAN; the chunk size is halved until it does (a V6 channel that
decays fast) and the recurrence runs when no chunk size fits (e.g. a decay intervened to ~0).
Cumulative log-decays and their exponents are taken in fp64 (cheap: [B,S,H,d]); the matmuls
run in the model's WKV dtype (fp32, or fp64 for exactness checks). Given the same inputs the
chunked WKV equals the recurrence to ~1e-7 of its scale in fp32; through a whole model the
per-head GroupNorm of a near-zero head output (position 0, state still zero) can amplify
such rounding differences ~10-20x, as it does for any reordering (MIN_CHUNKED_LEN keeps
short calls on the recurrence).

When the chunked form is used is :func:`chunk_allowed`'s decision (the model asks it at the
start of each call): not for short calls (generation steps), not when the model's switch
``GenericRwkv.chunked_wkv`` is off, and not when something needs the state at individual
positions (``per_step_state``: no hook point does today). Hooks on r/k/v/w/decay/a/kk/g,
``hook_state`` (the final state) and effective attention (computed from r, k and the decays)
do not forbid it: they act on whole-sequence tensors before or after the WKV. State
knockout / steering do not either: their per-position scale of the write kᵀv
(``write_scale``, the recurrences' argument) is applied here too.
"""

from __future__ import annotations

import torch

from ...errors import InputError
from .ops import wide
from .wkv import wkv6, wkv7

CHUNK = 32  # positions per chunk (halved while a chunk's log-decay spans > MAX_SPAN)
MIN_CHUNK = 2
MIN_CHUNKED_LEN = 16  # below this the recurrence is as fast (generation runs 1 token)
MAX_SPAN = 60.0  # e^±60 ~ 1e±26 (even in fp32 far from overflow and subnormals)


def chunk_allowed(seq_len: int, *, enabled: bool = True, per_step_state: bool = False) -> bool:
    """Whether a call of ``seq_len`` new positions may run the chunked WKV.

    ``enabled`` is the model's switch (``GenericRwkv.chunked_wkv``); ``per_step_state`` is
    True when something needs the WKV state itself at individual positions (no hook point
    does today: state knockout / steering only scale each position's write, which the
    chunked form applies too); such a call runs the token-by-token recurrence."""
    if not isinstance(enabled, bool):
        raise InputError(f"GenericRwkv.chunked_wkv must be True or False, got "
                         f"{type(enabled).__name__} {enabled!r}")
    return enabled and not per_step_state and seq_len >= MIN_CHUNKED_LEN


def chunk_size(log_decay: torch.Tensor, largest: int = CHUNK) -> int | None:
    """The largest chunk (``largest``, halved down to MIN_CHUNK) whose per-chunk log-decay
    span stays within MAX_SPAN, or None (run the recurrence). log_decay [B,S,H,d] fp64."""
    c = largest
    while c >= MIN_CHUNK:
        a = _chunks(log_decay, c, 0.0).cumsum(-2)  # [B,H,N,C,d]
        span = a.amax(-2).clamp(min=0) - a.amin(-2).clamp(max=0)
        if bool((span <= MAX_SPAN).all()):  # NaN / inf fail this test
            return c
        c //= 2
    return None


def _chunks(x: torch.Tensor, c: int, pad: float) -> torch.Tensor:
    """[B,S,H,d] -> [B,H,N,C,d], the tail padded with ``pad`` to N*C positions."""
    b, s, h, d = x.shape
    n = -(-s // c)
    if n * c != s:
        x = torch.cat([x, x.new_full((b, n * c - s, h, d), pad)], dim=1)
    return x.view(b, n, c, h, d).permute(0, 3, 1, 2, 4)


def _unchunk(y: torch.Tensor, s: int) -> torch.Tensor:
    """[B,H,N,C,d] -> [B,S,H,d] (padding dropped)."""
    b, h, n, c, d = y.shape
    return y.permute(0, 2, 3, 1, 4).reshape(b, n * c, h, d)[:, :s]


class _Decays:
    """Per-chunk decay factors [B,H,N,C,d] in the compute dtype, from log-decays (fp64)."""

    def __init__(self, log_decay: torch.Tensor, c: int, dtype: torch.dtype) -> None:
        lw = _chunks(log_decay, c, 0.0)
        a = lw.cumsum(-2)  # inclusive A_t
        last = a[..., -1:, :]  # A_{C-1} [B,H,N,1,d]
        self.incl = a.exp().to(dtype)  # e^{A_t}
        self.excl = (a - lw).exp().to(dtype)  # e^{A_{t-1}}
        self.inv = (-a).exp().to(dtype)  # e^{-A_t}
        self.tail = (last - a).exp().to(dtype)  # e^{A_{C-1}-A_t}
        self.last = last.squeeze(-2).exp().to(dtype)  # e^{A_{C-1}} [B,H,N,d]


def _masks(c: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ones = torch.ones(c, c, dtype=torch.bool, device=device)
    return torch.tril(ones, -1), torch.tril(ones)  # strict, inclusive [C,C]


def _scan(start: torch.Tensor, decay_or_g: torch.Tensor, h0: torch.Tensor,
          diagonal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """S_{n+1} = G_n S_n + H0_n over the chunks (G_n diagonal: a [B,H,N,d] vector). Returns
    (S_n at every chunk start [B,H,N,d,d], final state [B,H,d,d])."""
    s, starts = start, []
    for n in range(h0.shape[2]):
        starts.append(s)
        g = decay_or_g[:, :, n]
        s = (g[..., None] * s if diagonal else g @ s) + h0[:, :, n]
    return torch.stack(starts, dim=2), s


def _scaled(k: torch.Tensor, write_scale: torch.Tensor | None) -> torch.Tensor:
    """k [B,S,H,d] with each position's state write scaled (knockout / steering)."""
    return k if write_scale is None else k * write_scale.to(k)[None, :, None, None]


def wkv6_chunked(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
                 u: torch.Tensor, state: torch.Tensor,
                 write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`wkv.wkv6`: r, k, v, w (decay in (0,1)) [B,S,H,d], u [H,d],
    state [B,H,d,d], ``write_scale`` [S] (scales the state write, not the bonus) ->
    (y [B,S,H,d], final state [B,H,d,d])."""
    log_decay = wide(w).double().log()
    c = chunk_size(log_decay)
    if c is None:
        return wkv6(r, k, v, w, u, state, write_scale)
    r, k, v = (wide(t) for t in (r, k, v))
    out_dtype, dt, s = r.dtype, r.dtype, r.shape[1]
    dec = _Decays(log_decay, c, dt)
    strict, _ = _masks(c, r.device)
    rc, kc, vc = (_chunks(t, c, 0.0) for t in (r, k, v))  # [B,H,N,C,d]
    kw = kc if write_scale is None else _chunks(_scaled(k, write_scale), c, 0.0)
    r_ex = rc * dec.excl
    att = (r_ex @ (kw * dec.inv).transpose(-1, -2)).masked_fill(~strict, 0.0)  # [B,H,N,C,C]
    bonus = (rc * wide(u).to(dt)[None, :, None, None, :] * kc).sum(-1, keepdim=True)
    y0 = att @ vc + bonus * vc  # [B,H,N,C,d]
    h0 = (kw * dec.tail).transpose(-1, -2) @ vc  # [B,H,N,d,d]
    starts, final = _scan(state.to(dt), dec.last, h0, diagonal=True)
    y = y0 + r_ex @ starts
    return _unchunk(y, s).to(out_dtype), final.to(state.dtype)


def wkv7_chunked(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 kk: torch.Tensor, a: torch.Tensor, state: torch.Tensor,
                 write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`wkv.wkv7`: r, w (decay), k (modulated key), v, kk, a
    [B,S,H,d], state [B,H,d,d], ``write_scale`` [S] (scales the write kᵀv; decay and
    rank-1 term still apply) -> (y [B,S,H,d], final state [B,H,d,d])."""
    log_decay = wide(w).double().log()
    c = chunk_size(log_decay)
    if c is None:
        return wkv7(r, w, k, v, kk, a, state, write_scale)
    r, k, v, kk, a = (wide(t) for t in (r, k, v, kk, a))
    out_dtype, dt, s = r.dtype, r.dtype, r.shape[1]
    k = _scaled(k, write_scale)  # in V7 k only enters through the write kᵀv
    dec = _Decays(log_decay, c, dt)
    strict, incl = _masks(c, r.device)
    rc, kc, vc = (_chunks(t, c, 0.0) for t in (r, k, v))  # [B,H,N,C,d]
    kkc = _chunks(kk, c, 0.0)
    bc = kkc * _chunks(a, c, 0.0)  # b = kk*a
    alpha = -kkc * dec.excl  # α̃ = -kk ⊙ e^{A_{t-1}}
    k_hat, b_hat = kc * dec.inv, bc * dec.inv
    m_ka = (alpha @ k_hat.transpose(-1, -2)).masked_fill(~strict, 0.0)  # [B,H,N,C,C]
    m_ba = (alpha @ b_hat.transpose(-1, -2)).masked_fill(~strict, 0.0)
    eye = torch.eye(c, dtype=dt, device=r.device)
    wu = torch.linalg.solve_triangular(eye - m_ba, torch.cat([alpha, m_ka @ vc], dim=-1),
                                       upper=False, unitriangular=True)
    wy, u0 = wu.split(alpha.shape[-1], dim=-1)  # U = W S0 + U0: [B,H,N,C,d] each
    r_in = rc * dec.incl
    m_rk = (r_in @ k_hat.transpose(-1, -2)).masked_fill(~incl, 0.0)
    m_rb = (r_in @ b_hat.transpose(-1, -2)).masked_fill(~incl, 0.0)
    q = r_in + m_rb @ wy  # Y = Q S0 + Y0
    y0 = m_rk @ vc + m_rb @ u0
    b_tail = (bc * dec.tail).transpose(-1, -2)  # [B,H,N,d,C]
    g = torch.diag_embed(dec.last) + b_tail @ wy  # S_C = G S0 + H0: [B,H,N,d,d]
    h0 = (kc * dec.tail).transpose(-1, -2) @ vc + b_tail @ u0
    starts, final = _scan(state.to(dt), g, h0, diagonal=False)
    y = y0 + q @ starts
    return _unchunk(y, s).to(out_dtype), final.to(state.dtype)
