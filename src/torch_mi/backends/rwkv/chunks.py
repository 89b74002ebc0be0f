"""The chunk pieces of the block-parallel WKV: what ``wkv_chunked`` (the WKV of a prompt)
and ``effective_attn`` (the WKV of one-hot values) both read, computed once per time mix.

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
(``recording``), ``prepare6``/``prepare7`` return None and the callers take their exact
paths (the recurrence: the same numbers, differentiable).

Layout: every per-position input is copied once into chunk-major blocks [B*H*N, C, d], so
each step is one batched matmul (``bmm``/``baddbmm``) over all chunks of all heads, and only
the d×d state update runs chunk after chunk. Given the same inputs the
chunked WKV equals the recurrence to ~1e-7 of its scale in fp32; through a whole model the
per-head GroupNorm of a near-zero head output (position 0, state still zero) can amplify
such rounding differences ~10-20x, as it does for any reordering (MIN_CHUNKED_LEN keeps
short calls on the recurrence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .ops import scaled, wide

CHUNK = 32  # positions per chunk (halved while a chunk's split factors leave e^±MAX_SPAN)
V7_CHUNK = 64  # RWKV-7: its decays allow it, and fewer chunks mean fewer state steps
MIN_CHUNK = 2
MAX_SPAN = 60.0  # e^±60 ~ 1e±26 (even in fp32 far from overflow and subnormals)
BOUND = math.exp(MAX_SPAN)


def recording(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on ``tensors`` (then no chunk pieces: the
    callers run their differentiable exact paths)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def chunk_size(decay: torch.Tensor, largest: int = CHUNK, centred: bool = False) -> int | None:
    """The largest chunk (``largest``, halved down to MIN_CHUNK) whose split factors stay
    within e^±MAX_SPAN, or None (run the recurrence). decay [B,S,H,d] (the multiplicative
    decay); ``centred``: factors relative to the chunk middle (RWKV-6), else to its start."""
    found = fit(decay, largest, centred)
    return None if found is None else found[0]


def fit(decay: torch.Tensor, largest: int, centred: bool) -> tuple[int, torch.Tensor] | None:
    """(chunk size, e^{A_t} = the cumulative decay products per chunk [B*H*N, C, d] fp64)
    or None. The products of the fp32 decays in fp64 are the recurrence's weights (which
    multiplies by the same decays step by step) to ~1e-16, with no log/exp round trip."""
    c = largest
    while c >= MIN_CHUNK:
        e = blocks(decay, c, torch.float64, pad=1.0).cumprod(1)  # e^{A_t} from the chunk start
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


def blocks(x: torch.Tensor, c: int, dtype: torch.dtype, pad: float = 0.0) -> torch.Tensor:
    """[B,S,H,d] -> chunk-major [B*H*N, C, d] in ``dtype`` (one copy; the tail padded to N*C
    positions with ``pad``: a zero key or value, a decay of 1, changes nothing)."""
    b, s, h, d = x.shape
    n = -(-s // c)
    out = x.new_empty(b, h, n * c, d, dtype=dtype)
    out[:, :, :s].copy_(x.transpose(1, 2))
    if n * c != s:
        out[:, :, s:].fill_(pad)
    return out.view(b * h * n, c, d)


def unblock(y: torch.Tensor, b: int, h: int, s: int) -> torch.Tensor:
    """[B*H*N, C, d] -> [B,S,H,d] (a view; padding dropped)."""
    return y.view(b, h, -1, y.shape[-1])[:, :, :s].transpose(1, 2)


class Decays:
    """Decay factors of every chunk [B*H*N, C, d] in the compute dtype, from the cumulative
    decay products e = e^{A_t} [G,C,d] (fp64). ``narrow``: every e^{±A_t} is within
    e^±MAX_SPAN (``fit`` without ``centred``), so one conversion suffices and the
    reciprocal and products are taken in the compute dtype (1 ulp each); otherwise (RWKV-6's
    centred chunks span up to 2*MAX_SPAN from the start, beyond fp32's range) they are taken
    in fp64 and converted."""

    def __init__(self, e: torch.Tensor, dtype: torch.dtype, narrow: bool = False) -> None:
        self.e64 = e
        work = e.to(dtype) if narrow else e
        inv = work.reciprocal()  # e^{-A_t}
        self.inv, self.inv64 = inv.to(dtype), None if narrow else inv
        self.incl = work.to(dtype)
        self.excl = torch.ones_like(self.incl)  # e^{A_{t-1}}: the previous position's
        self.excl[:, 1:] = self.incl[:, :-1]
        last = work[:, -1:]  # e^{A_{C-1}} [G,1,d]
        self.tail = (last * inv).to(dtype)  # e^{A_{C-1}-A_t} <= 1
        self.last = last.squeeze(1).to(dtype)  # [G,d]

    def shifted64(self) -> torch.Tensor:
        """e^{A_{t-1}} in fp64 [G,C,d]."""
        out = torch.ones_like(self.e64)
        out[:, 1:] = self.e64[:, :-1]
        return out


def not_before(c: int, device: torch.device) -> torch.Tensor:
    """[C,C] True on and above the diagonal: what a read of strictly earlier sources zeros
    (``.triu(1)`` of it: what a read of sources up to the query itself zeros)."""
    return ~torch.ones(c, c, dtype=torch.bool, device=device).tril(-1)


def _pair(x: torch.Tensor, y: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """[x ⊙ factor ; y ⊙ factor] stacked along the positions: [G,2C,d] (one matmul reads
    both)."""
    g, c, d = x.shape
    out = x.new_empty(g, 2 * c, d)
    torch.mul(x, factor, out=out[:, :c])
    torch.mul(y, factor, out=out[:, c:])
    return out


@dataclass
class Chunks6:
    """RWKV-6 pieces [G = B*H*N chunks]: y = att V (within the chunk, the bonus on the
    diagonal) + r_ex S_start; the chunk's write to the state is ``write`` V; ``last`` decays
    the state through the chunk."""

    b: int
    h: int
    s: int
    c: int
    r_ex: torch.Tensor  # r ⊙ e^{A_{t-1}} [G,C,d]
    att: torch.Tensor  # [G,C,C]: r_t·(k_j ⊙ e^{A_{t-1}-A_j}) for j < t, r_t·(u⊙k_t) at j = t
    write: torch.Tensor  # (k ⊙ e^{A_{C-1}-A})ᵀ [G,d,C]
    last: torch.Tensor  # e^{A_{C-1}} [B*H,N,d]


def prepare6(r: torch.Tensor, k: torch.Tensor, w: torch.Tensor, u: torch.Tensor,
             write_scale: torch.Tensor | None) -> Chunks6 | None:
    """The RWKV-6 pieces of r, k, w (decay) [B,S,H,d], u [H,d]; None when the decays do not
    fit a chunk or autograd records (callers take their exact paths)."""
    found = None if recording(r, k, w, u) else fit(w, CHUNK, centred=True)
    if found is None:
        return None
    c, e = found
    b, s, h, d = r.shape
    dt = wide(r).dtype
    dec = Decays(e, dt)
    rb, kb = blocks(r, c, dt), blocks(k, c, dt)  # [G,C,d]
    kw = kb if write_scale is None else blocks(scaled(wide(k), write_scale), c, dt)
    mid = c // 2 - 1  # split e^{A_{t-1}-A_j} at A_mid: both factors within e^±MAX_SPAN
    q = rb * (dec.shifted64() * dec.inv64[:, mid:mid + 1]).to(dt)
    src = kw * (dec.inv64 * dec.e64[:, mid:mid + 1]).to(dt)
    att = torch.bmm(q, src.transpose(1, 2)).masked_fill_(not_before(c, r.device), 0.0)
    uu = wide(u).to(dt)[None, :, None, None, :]  # the bonus r·(u⊙k): never write-scaled
    bonus = (rb.view(b, h, -1, c, d) * uu * kb.view(b, h, -1, c, d)).sum(-1)
    att.diagonal(dim1=1, dim2=2).copy_(bonus.view(-1, c))
    return Chunks6(b, h, s, c, rb.mul_(dec.excl), att, (kw * dec.tail).transpose(1, 2),
                   dec.last.view(b * h, -1, d))


@dataclass
class Chunks7:
    """RWKV-7 pieces [G chunks] (wkv_chunked's notation): with ``P = (I - M_ba)⁻¹ M_ka``
    the removed values are ``U = W S0 + P V``, so y = m_r [V ; P V] + q S_start and the
    chunk's write is ``tails [V ; P V]``; ``g`` carries the state through the chunk."""

    b: int
    h: int
    s: int
    c: int
    q: torch.Tensor  # r̃ + M_rb W  [G,C,d]
    m_r: torch.Tensor  # [M_rk | M_rb] [G,C,2C] (sources up to the query)
    p: torch.Tensor  # (I - M_ba)⁻¹ M_ka  [G,C,C]
    tails: torch.Tensor  # [k ; b]ᵀ ⊙ e^{A_{C-1}-A}  [G,d,2C]
    g: torch.Tensor  # diag(e^{A_{C-1}}) + b_tailᵀ W  [B*H,N,d,d]


def prepare7(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, kk: torch.Tensor,
             a: torch.Tensor, write_scale: torch.Tensor | None) -> Chunks7 | None:
    """The RWKV-7 pieces of r, w (decay), k (modulated key), kk, a [B,S,H,d]; None as for
    :func:`prepare6`."""
    found = None if recording(r, w, k, kk, a) else fit(w, V7_CHUNK, centred=False)
    if found is None:
        return None
    c, e = found
    b, s, h, d = r.shape
    dt = wide(r).dtype
    dec = Decays(e, dt, narrow=True)  # chunks referenced to their start
    rb, kkb, ab = (blocks(t, c, dt) for t in (r, kk, a))  # [G,C,d]
    kb = blocks(scaled(wide(k), write_scale), c, dt)  # in V7 k only enters the write kᵀv
    bb = kkb * ab  # b = kk*a
    ar = kkb.new_empty(kkb.shape[0], 2 * c, d)  # [α̃ ; r̃]: one matmul reads both
    alpha, r_in = ar[:, :c], ar[:, c:]
    torch.mul(kkb, dec.excl, out=alpha).neg_()  # α̃ = -kk ⊙ e^{A_{t-1}}
    torch.mul(rb, dec.incl, out=r_in)  # r̃ = r ⊙ e^{A_t}
    src = _pair(kb, bb, dec.inv)  # [k̂ ; b̂] = [k ; b] ⊙ e^{-A}  [G,2C,d]
    m = torch.bmm(ar, src.transpose(1, 2))  # [G,2C,2C]: [α̃k̂ᵀ | α̃b̂ᵀ ; r̃k̂ᵀ | r̃b̂ᵀ]
    strict = not_before(c, r.device)  # α̃ reads sources before t, r̃ up to t
    m.view(-1, 2, c, 2, c).masked_fill_(torch.stack([strict, strict.triu(1)])[:, :, None], 0.0)
    m_a, m_r = m[:, :c], m[:, c:]  # [G,C,2C] each
    # (I - tril₋₁(α̃b̂ᵀ))⁻¹ once (unit lower triangular), then W = T⁻¹α̃ and P = T⁻¹M_ka.
    eye = torch.eye(c, dtype=dt, device=r.device).expand(m.shape[0], c, c)
    t_inv = torch.linalg.solve_triangular(m_a[:, :, c:].neg(), eye, upper=False,
                                          unitriangular=True)
    wy, p = torch.bmm(t_inv, alpha), torch.bmm(t_inv, m_a[:, :, :c])
    tails = _pair(kb, bb, dec.tail).transpose(1, 2)  # [k ; b] ⊙ e^{A_{C-1}-A}  [G,d,2C]
    g = torch.bmm(tails[:, :, c:], wy)  # [G,d,d]
    g.diagonal(dim1=1, dim2=2).add_(dec.last)
    return Chunks7(b, h, s, c, torch.baddbmm(r_in, m_r[:, :, c:], wy), m_r, p, tails,
                   g.view(b * h, -1, d, d))
