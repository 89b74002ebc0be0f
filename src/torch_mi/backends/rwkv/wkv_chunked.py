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

Exponents: a within-chunk weight ``e^{A_{t-1}-A_j}`` (j < t, at most 1) is split into a
query factor and a source factor so the chunk becomes a matmul. The split factors are taken
relative to a reference position: the chunk start for RWKV-7 (its log-decay is at least
-e^-0.5 per step: 64 positions span < 39), the chunk MIDDLE for RWKV-6, whose channels can
decay fast (both factors then stay within ``e^{±span/2}``, so a chunk may span twice as
much). Every factor stays within ``e^{±MAX_SPAN}`` (far from overflow and subnormals); the
chunk size is halved until it does and the recurrence runs when no chunk size fits (e.g. a
decay intervened to ~0). Factors that never exceed 1 (a query reading the chunk-start state,
a source's write decayed to the chunk end) keep the chunk start as reference: they can only
underflow where the true weight is below fp32's resolution anyway. The cumulative factors
``e^{A_t}`` are products of the decays taken in fp64 (``cumprod``: the recurrence's own
weights to ~1e-16, no log/exp round trip; the others are a reciprocal and products of
them); the matmuls run in the model's WKV dtype (fp32, or fp64 for exactness checks).

Gradients: the chunked kernels work in place and through ``out=``; when autograd records
(``recording``), the recurrence runs instead (the same numbers, differentiable).

Layout: every per-position input is copied once into chunk-major blocks [B*H*N, C, d], so
each step is one batched matmul (``bmm``/``baddbmm``) over all chunks of all heads, and only
the d×d state update runs chunk after chunk. Given the same inputs the
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

import math

import torch

from ...errors import InputError
from .ops import wide
from .wkv import wkv6, wkv7

CHUNK = 32  # positions per chunk (halved while a chunk's split factors leave e^±MAX_SPAN)
V7_CHUNK = 64  # RWKV-7: its decays allow it, and fewer chunks mean fewer state steps
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


def recording(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on ``tensors``. The chunked kernels work in
    place and through ``out=`` (inference speed); when gradients are wanted the recurrence
    (or, for effective attention, the exact path) runs instead: same numbers,
    differentiable."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def chunk_size(decay: torch.Tensor, largest: int = CHUNK, centred: bool = False) -> int | None:
    """The largest chunk (``largest``, halved down to MIN_CHUNK) whose split factors stay
    within e^±MAX_SPAN, or None (run the recurrence). decay [B,S,H,d] (the multiplicative
    decay); ``centred``: factors relative to the chunk middle (RWKV-6), else to its start."""
    fit = _fit(decay, largest, centred)
    return None if fit is None else fit[0]


BOUND = math.exp(MAX_SPAN)


def _fit(decay: torch.Tensor, largest: int, centred: bool) -> tuple[int, torch.Tensor] | None:
    """(chunk size, e^{A_t} = the cumulative decay products per chunk [B*H*N, C, d] fp64)
    or None. The products of the fp32 decays in fp64 are the recurrence's weights (which
    multiplies by the same decays step by step) to ~1e-16, with no log/exp round trip."""
    c = largest
    while c >= MIN_CHUNK:
        e = _blocks(decay, c, torch.float64, pad=1.0).cumprod(1)  # e^{A_t} from the chunk start
        hi, lo = e.amax(1).clamp(min=1.0), e.amin(1).clamp(max=1.0)  # e^{A_{-1}} = 1 included
        if centred:  # e^{±(A - A_mid)} and the start-referenced factors (<= 1 unless decay > 1)
            mid = e[:, c // 2 - 1]
            ok = (hi <= mid * BOUND) & (lo * BOUND >= mid) & (hi <= BOUND)
        else:
            ok = hi <= lo * BOUND
        if bool(ok.all()):  # NaN fails this test; so does a decay of 0 (lo = 0)
            return c, e
        c //= 2
    return None


def _blocks(x: torch.Tensor, c: int, dtype: torch.dtype, pad: float = 0.0) -> torch.Tensor:
    """[B,S,H,d] -> chunk-major [B*H*N, C, d] in ``dtype`` (one copy; the tail padded to N*C
    positions with ``pad``: a zero key or value, a decay of 1, changes nothing)."""
    b, s, h, d = x.shape
    n = -(-s // c)
    out = x.new_empty(b, h, n * c, d, dtype=dtype)
    out[:, :, :s].copy_(x.transpose(1, 2))
    if n * c != s:
        out[:, :, s:].fill_(pad)
    return out.view(b * h * n, c, d)


def _unblock(y: torch.Tensor, b: int, h: int, s: int) -> torch.Tensor:
    """[B*H*N, C, d] -> [B,S,H,d] (a view; padding dropped)."""
    return y.view(b, h, -1, y.shape[-1])[:, :, :s].transpose(1, 2)


class _Decays:
    """Decay factors of every chunk [B*H*N, C, d] in the compute dtype, from the cumulative
    decay products e = e^{A_t} [G,C,d] (fp64)."""

    def __init__(self, e: torch.Tensor, dtype: torch.dtype) -> None:
        self.e64, self.inv64 = e, e.reciprocal()  # e^{-A_t}
        self.incl = e.to(dtype)
        self.excl = torch.ones_like(self.incl)  # e^{A_{t-1}}: the previous position's
        self.excl[:, 1:] = self.incl[:, :-1]
        last = e[:, -1:]  # e^{A_{C-1}} [G,1,d]
        self.tail = (last * self.inv64).to(dtype)  # e^{A_{C-1}-A_t} <= 1
        self.last = last.squeeze(1).to(dtype)  # [G,d]


def _strict(c: int, device: torch.device) -> torch.Tensor:
    """[C,C] True strictly above the diagonal and on it (what a causal read must zero)."""
    return ~torch.ones(c, c, dtype=torch.bool, device=device).tril(-1)


def _scaled(k: torch.Tensor, write_scale: torch.Tensor | None) -> torch.Tensor:
    """k [B,S,H,d] with each position's state write scaled (knockout / steering)."""
    return k if write_scale is None else k * write_scale.to(k)[None, :, None, None]


def _scan(state: torch.Tensor, g: torch.Tensor, h0: torch.Tensor,
          diagonal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """S_{n+1} = G_n S_n + H0_n over the chunks; state [B,H,d,d], g [B*H,N,d] (diagonal) or
    [B*H,N,d,d], h0 [B*H,N,d,d]. Returns (S_n at every chunk start [B*H*N,d,d], final
    state [B*H,d,d])."""
    bh, n, d = h0.shape[:3]
    starts = h0.new_empty(bh, n + 1, d, h0.shape[-1])
    starts[:, 0] = state.reshape(bh, d, -1)
    for i in range(n):
        if diagonal:
            torch.addcmul(h0[:, i], g[:, i, :, None], starts[:, i], out=starts[:, i + 1])
        else:
            torch.baddbmm(h0[:, i], g[:, i], starts[:, i], out=starts[:, i + 1])
    return starts[:, :n].reshape(bh * n, d, -1), starts[:, n]


def wkv6_chunked(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
                 u: torch.Tensor, state: torch.Tensor,
                 write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`wkv.wkv6`: r, k, v, w (decay in (0,1)) [B,S,H,d], u [H,d],
    state [B,H,d,d], ``write_scale`` [S] (scales the state write, not the bonus) ->
    (y [B,S,H,d], final state [B,H,d,d])."""
    fit = None if recording(r, k, v, w, u, state) else _fit(w, CHUNK, centred=True)
    if fit is None:
        return wkv6(r, k, v, w, u, state, write_scale)
    c, e = fit
    b, s, h, d = r.shape
    dt = wide(r).dtype
    dec = _Decays(e, dt)
    rb, kb, vb = (_blocks(t, c, dt) for t in (r, k, v))  # [G,C,d]
    kw = kb if write_scale is None else _blocks(_scaled(wide(k), write_scale), c, dt)
    mid = c // 2 - 1  # split e^{A_{t-1}-A_j} at A_mid: both factors within e^±MAX_SPAN
    q = rb * (_shifted(dec.e64) * dec.inv64[:, mid:mid + 1]).to(dt)
    src = kw * (dec.inv64 * dec.e64[:, mid:mid + 1]).to(dt)
    att = torch.bmm(q, src.transpose(1, 2)).masked_fill_(_strict(c, r.device), 0.0)
    uu = wide(u).to(dt)[None, :, None, None, :]  # the bonus r·(u⊙k) on the diagonal
    bonus = (rb.view(b, h, -1, c, d) * uu * kb.view(b, h, -1, c, d)).sum(-1)
    att.diagonal(dim1=1, dim2=2).copy_(bonus.view(-1, c))
    y = torch.bmm(att, vb)  # within the chunk [G,C,d]
    h0 = torch.bmm((kw * dec.tail).transpose(1, 2), vb)  # the chunk's write [G,d,d]
    starts, final = _scan(state.to(dt), dec.last.view(b * h, -1, d), h0.view(b * h, -1, d, d),
                          diagonal=True)
    y = torch.baddbmm(y, rb * dec.excl, starts)  # + the chunk-start state read
    return _unblock(y, b, h, s), final.view(state.shape).to(state.dtype)


def _shifted(e: torch.Tensor) -> torch.Tensor:
    """e^{A_{t-1}} from e^{A_t} [G,C,d] (fp64): the previous position's, 1 at t = 0."""
    out = torch.ones_like(e)
    out[:, 1:] = e[:, :-1]
    return out


def _pair(x: torch.Tensor, y: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """[x ⊙ factor ; y ⊙ factor] stacked along the positions: [G,2C,d] (one matmul reads
    both)."""
    g, c, d = x.shape
    out = x.new_empty(g, 2 * c, d)
    torch.mul(x, factor, out=out[:, :c])
    torch.mul(y, factor, out=out[:, c:])
    return out


def wkv7_chunked(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 kk: torch.Tensor, a: torch.Tensor, state: torch.Tensor,
                 write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`wkv.wkv7`: r, w (decay), k (modulated key), v, kk, a
    [B,S,H,d], state [B,H,d,d], ``write_scale`` [S] (scales the write kᵀv; decay and
    rank-1 term still apply) -> (y [B,S,H,d], final state [B,H,d,d])."""
    fit = None if recording(r, w, k, v, kk, a, state) else _fit(w, V7_CHUNK, centred=False)
    if fit is None:
        return wkv7(r, w, k, v, kk, a, state, write_scale)
    c, e = fit
    b, s, h, d = r.shape
    dt = wide(r).dtype
    dec = _Decays(e, dt)
    rb, vb, kkb, ab = (_blocks(t, c, dt) for t in (r, v, kk, a))  # [G,C,d]
    kb = _blocks(_scaled(wide(k), write_scale), c, dt)  # in V7 k only enters the write kᵀv
    bb = kkb * ab  # b = kk*a
    alpha = kkb.mul_(dec.excl).neg_()  # α̃ = -kk ⊙ e^{A_{t-1}}
    src = _pair(kb, bb, dec.inv64.to(dt))  # [k̂ ; b̂] = [k ; b] ⊙ e^{-A}  [G,2C,d]
    strict = _strict(c, r.device)
    m_a = torch.bmm(alpha, src.transpose(1, 2))  # [G,C,2C]: α̃k̂ᵀ | α̃b̂ᵀ
    m_a.view(-1, c, 2, c).masked_fill_(strict[:, None, :], 0.0)
    lower = m_a[:, :, c:].neg()  # I - tril₋₁(α̃b̂ᵀ)
    lower.diagonal(dim1=1, dim2=2).fill_(1.0)
    wu = torch.linalg.solve_triangular(lower, torch.cat([alpha, torch.bmm(m_a[:, :, :c], vb)],
                                                        dim=-1), upper=False,
                                       unitriangular=True)  # U = W S0 + U0
    wy = wu[:, :, :d]
    vu = torch.cat([vb, wu[:, :, d:]], dim=1)  # [V ; U0] [G,2C,d]
    r_in = rb.mul_(dec.incl)
    m_r = torch.bmm(r_in, src.transpose(1, 2))  # [G,C,2C]: r̃k̂ᵀ | r̃b̂ᵀ (diagonal kept)
    m_r.view(-1, c, 2, c).masked_fill_(strict.triu(1)[:, None, :], 0.0)
    q = torch.baddbmm(r_in, m_r[:, :, c:], wy)  # Y = Q S0 + Y0
    y = torch.bmm(m_r, vu)
    tails = _pair(kb, bb, dec.tail).transpose(1, 2)  # [k ; b] ⊙ e^{A_{C-1}-A}  [G,d,2C]
    g = torch.bmm(tails[:, :, c:], wy)  # S_C = G S0 + H0: [G,d,d]
    g.diagonal(dim1=1, dim2=2).add_(dec.last)
    h0 = torch.bmm(tails, vu)
    starts, final = _scan(state.to(dt), g.view(b * h, -1, d, d), h0.view(b * h, -1, d, d),
                          diagonal=False)
    y = torch.baddbmm(y, q, starts)
    return _unblock(y, b, h, s), final.view(state.shape).to(state.dtype)
