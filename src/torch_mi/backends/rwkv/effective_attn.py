"""Effective attention of an RWKV time mix: ``blocks.{i}.rwkv.hook_effective_attn`` [B,H,S,S].

The WKV output is linear in the values: ``y_t = Σ_{i<=t} α_raw[t,i] v_i`` (plus the
contribution of an incoming state, which is left out), with coefficients that depend only
on r, k and the decays (inventory §5.9):

* RWKV-6 (products of decays as exponentials of log-decay prefix sums):
  ``α_raw[t,i] = Σ_d r_t[d] k_i[d] Π_{j=i+1}^{t-1} decay_j[d]`` for ``i < t`` and the bonus
  ``α_raw[t,t] = Σ_d r_t[d] k_t[d] u[d]``. Computed by chunks like ``wkv_chunked``
  (exponents relative to a chunk start); when a chunk's log-decay span is too wide, by
  exact fp64 prefix sums per block of queries.
* RWKV-7 (backward linear functional through the diag + rank-1 transitions
  ``T_j = diag(decay_j) + b_j act_aᵀ_j`` with ``act_a = -kk``, ``b = kk ⊙ a``):
  ``l = r_t``, ``α_raw[t,t] = l·k_t``, then for ``j = t..1``: ``l ← l T_j``,
  ``α_raw[t,j-1] = l·k_{j-1}`` (k is the modulated key the state is written with).
  Computed all at once as the WKV-7 of one-hot values, chunked as in ``wkv_chunked``:
  the same linear functional, as matmuls within chunks and a growing d×(sources) scan.

Both: future positions are 0, then each row is normalised **ReLU then L1**:
``α = relu(α_raw) / (Σ relu(α_raw) + 1e-10)`` (a row whose entries are all <= 0 is all
zeros, never NaN). It is an attention over keys, not an exact output decomposition (values,
GroupNorm and RWKV-7's bonus term are ignored).

Beyond upstream: a state knockout/steering ``write_scale`` [S] is folded in (the write of
source ``i`` is scaled, so a knocked-out source gets 0 from later queries, and on RWKV-7
from itself too; RWKV-6's bonus diagonal is never scaled). The tensors used are those of
the forward, after any interventions at ``rwkv.hook_r|k|decay|...``.

Computed only when the point is captured (or its gradient asked for); O(S²·d) per head.
"""

from __future__ import annotations

import torch

from ...errors import HookError
from ...hooks.points import HookPoint
from ...hooks.runtime import HookRuntime
from .chunks import Chunks6, Chunks7, prepare6, prepare7
from .ops import wide
from .wkv import wkv7

EPS = 1e-10  # the L1 normaliser's epsilon (upstream's)
LOG_FLOOR = -700.0  # a decay of exactly 0 becomes e^-700 (no -inf - -inf = NaN in the sums)
QUERY_CHUNK = 32  # RWKV-6 queries per block: one matmul for earlier sources, direct inside


def refuse_interventions(hooks: HookRuntime, points: list[HookPoint]) -> None:
    """HookError if the call intervenes at an effective-attention point: it is an analysis
    read out of r, k and the decays, and nothing in the forward consumes it."""
    for point in points:
        if hooks.intervenes(point):
            raise HookError(f"'{point}' is read-only: effective attention is computed from "
                            f"r, k and the decays and feeds nothing downstream, so an "
                            f"intervention there would change nothing. Intervene at "
                            f"blocks.{point.layer}.rwkv.hook_r / hook_k / hook_decay instead")


def normalise(raw: torch.Tensor) -> torch.Tensor:
    """ReLU then L1 per row of [B,H,S,S] (causal entries already zero), IN PLACE: ``raw``
    is a fresh tensor of the caller's (an [S,S] map per head: no extra full-size copies),
    out of place when autograd records it (gradients of effective attention)."""
    if raw.requires_grad:
        pos = torch.relu(raw)
        return pos / (pos.sum(-1, keepdim=True) + EPS)
    raw.relu_()
    return raw.div_(raw.sum(-1, keepdim=True).add_(EPS))


def effective_attn_v6(r: torch.Tensor, k: torch.Tensor, decay: torch.Tensor,
                      u: torch.Tensor, write_scale: torch.Tensor | None = None,
                      log_decay: torch.Tensor | None = None,
                      pieces: Chunks6 | None = None) -> torch.Tensor:
    """r, k, decay [B,S,H,d], u [H,d], write_scale [S] or None -> α [B,H,S,S] fp32.

    From the chunk pieces (``chunks.prepare6`` of the same inputs; given by the time mix,
    which already built them for the WKV) as the WKV-6 of one-hot values when the decays
    allow it and no gradient is recorded, else by exact fp64 prefix sums per query block,
    for which ``log_decay`` (the forward's ``w``) is used when given (more exact than
    ``log(decay)``; pass None when the decay was changed by an intervention)."""
    pieces = pieces or prepare6(r, k, decay, u, write_scale)
    if pieces is not None:  # att holds the sources before each query and the bonus diagonal
        def carry(i: int, past: torch.Tensor) -> None:  # diagonal: in place
            past.mul_(pieces.last[:, i, :, None])

        return normalise(_assemble(pieces.r_ex, pieces.att, pieces.write, carry,
                                   pieces)).float()
    rr, kk = wide(r), wide(k)
    logw = torch.log(decay.double()) if log_decay is None else log_decay.double()
    raw = _v6_exact_raw(rr.transpose(1, 2), kk.transpose(1, 2), logw.transpose(1, 2))
    if write_scale is not None:
        raw = raw * write_scale.to(raw.dtype)  # source columns (not the bonus diagonal)
    bonus = (rr * kk * wide(u)).sum(-1).transpose(1, 2)  # [B,H,S]
    if raw.requires_grad or bonus.requires_grad:
        return normalise(raw + torch.diag_embed(bonus)).float()
    raw.diagonal(dim1=-2, dim2=-1).add_(bonus)  # the diagonal is 0 until here
    return normalise(raw).float()


def _v6_exact_raw(rr: torch.Tensor, kk: torch.Tensor, logw: torch.Tensor) -> torch.Tensor:
    """α_raw [B,H,S,S] below the diagonal from rr, kk [B,H,S,d] and fp64 log-decays."""
    logw = logw.clamp(min=LOG_FLOOR)  # [B,H,S,d]
    inclusive = logw.cumsum(2)  # Σ_{j<=i} log w_j
    exclusive = inclusive - logw  # Σ_{j<t} log w_j
    s = rr.shape[2]
    rows = []
    for q0 in range(0, s, QUERY_CHUNK):
        q1 = min(s, q0 + QUERY_CHUNK)
        rows.append(_v6_rows(rr, kk, inclusive, exclusive, q0, q1))
    return torch.cat(rows, dim=2)  # [B,H,S,S], zero on and above the diagonal


def effective_attn_v7(r: torch.Tensor, decay: torch.Tensor, k: torch.Tensor,
                      kk: torch.Tensor, a: torch.Tensor,
                      write_scale: torch.Tensor | None = None,
                      pieces: Chunks7 | None = None) -> torch.Tensor:
    """r, decay, k (the modulated key), kk, a [B,S,H,d], write_scale [S] or None ->
    α [B,H,S,S] fp32.

    α_raw[t, i] is the weight of v_i in y_t: the WKV-7 output for one-hot values from a zero
    state. From the chunk pieces (``chunks.prepare7``; the one-hot values of a chunk are
    the identity, so its removed values are ``P``): a chunk's own block is
    ``M_rk + M_rb P``, its write ``k_tailᵀ + b_tailᵀ P``, and an earlier chunk's columns are
    read through ``Q`` from a d×(sources so far) "state" that grows by one chunk per step
    (``G`` on the old columns, the chunk's write appended): O(S²·d) per head as matmuls. A
    decay too close to 0 for the chunked exponents, or a recorded gradient, takes the
    recurrence (same functional). ``write_scale`` scales the write of source i, i.e. column
    i (diagonal included)."""
    pieces = pieces or prepare7(r, decay, k, kk, a, write_scale)
    if pieces is None:  # the recurrence on one-hot values (value dimension S)
        r, decay, k, kk, a = (wide(t) for t in (r, decay, k, kk, a))  # [B,S,H,d]
        b, s, h, d = r.shape
        values = torch.eye(s, dtype=r.dtype, device=r.device)[None, :, None, :]
        start = r.new_zeros(b, h, d, s)
        raw, _ = wkv7(r, decay, k, values.expand(b, s, h, s), kk, a, start, write_scale)
        return normalise(torch.tril(raw.transpose(1, 2))).float()
    c, x = pieces.c, pieces
    own = torch.baddbmm(x.m_r[:, :, :c], x.m_r[:, :, c:], x.p)  # [G,C,C]
    write = torch.baddbmm(x.tails[:, :, :c], x.tails[:, :, c:], x.p)  # [G,d,C]

    def carry(i: int, past: torch.Tensor) -> None:
        past.copy_(torch.bmm(x.g[:, i], past))

    return normalise(_assemble(x.q, own, write, carry, x)).float()


def _assemble(q: torch.Tensor, own: torch.Tensor, write: torch.Tensor, carry,
              shape: Chunks6 | Chunks7) -> torch.Tensor:
    """α_raw [B,H,S,S] from per-chunk pieces [B*H*N, ...]: ``own`` [C,C] blocks on the
    diagonal, earlier chunks' columns ``q_i @ past`` where ``past`` [B*H,d,iC] holds the
    sources before chunk i: ``carry(i, past)`` applies the chunk transition to the old
    columns in place, then the chunk's own write [d,C] is appended. Products go to fresh
    tensors and are copied in (matmuls with ``out=`` strided views are ~30% slower here)."""
    b, h, s, c = shape.b, shape.h, shape.s, shape.c
    d = q.shape[-1]
    n = q.shape[0] // (b * h)
    q, own, write = (t.view(b * h, n, *t.shape[1:]) for t in (q, own, write))
    raw = q.new_zeros(b * h, n * c, n * c)  # one memset beats zeroing each row block
    past = q.new_empty(b * h, d, n * c)
    for i in range(n):
        rows, done = slice(i * c, (i + 1) * c), i * c
        if i:
            raw[:, rows, :done] = torch.bmm(q[:, i], past[:, :, :done])
            carry(i, past[:, :, :done])
        raw[:, rows, rows] = own[:, i]
        past[:, :, rows] = write[:, i]
    return raw.view(b, h, n * c, n * c)[:, :, :s, :s]


def _v6_rows(rr: torch.Tensor, kk: torch.Tensor, inclusive: torch.Tensor,
             exclusive: torch.Tensor, q0: int, q1: int) -> torch.Tensor:
    """α_raw of queries q0..q1-1 [B,H,c,S] (sources < query). Sources before the chunk
    factor through the chunk start, Π_{i<j<t} w = Π_{q0<=j<t} w · Π_{i<j<q0} w (both
    factors <= 1: no overflow), so they cost one matmul; sources in the chunk go direct."""
    dt, s = rr.dtype, rr.shape[2]
    ref = exclusive[:, :, q0:q0 + 1]  # Σ_{j<q0} log w  [B,H,1,d]
    left = rr[:, :, q0:q1] * torch.exp(exclusive[:, :, q0:q1] - ref).to(dt)  # [B,H,c,d]
    right = kk[:, :, :q0] * torch.exp(ref - inclusive[:, :, :q0]).to(dt)  # [B,H,q0,d]
    early = left @ right.transpose(-1, -2)  # [B,H,c,q0]
    expo = exclusive[:, :, q0:q1, None, :] - inclusive[:, :, None, q0:q1, :]  # [B,H,c,c,d]
    pos = torch.arange(q1 - q0, device=rr.device)
    earlier = (pos[None, :] < pos[:, None])[..., None]  # source before query [c,c,1]
    prod = torch.exp(expo.masked_fill(~earlier, float("-inf"))).to(dt)
    within = (rr[:, :, q0:q1, None, :] * kk[:, :, None, q0:q1, :] * prod).sum(-1)
    later = rr.new_zeros(*rr.shape[:2], q1 - q0, s - q1)
    return torch.cat([early, within, later], dim=-1)
