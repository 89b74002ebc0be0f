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
from .ops import wide
from .wkv import wkv7
from .wkv_chunked import CHUNK, V7_CHUNK, _blocks, _Decays, _fit, _scaled, _shifted, _strict, recording

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
                      log_decay: torch.Tensor | None = None) -> torch.Tensor:
    """r, k, decay [B,S,H,d], u [H,d], write_scale [S] or None -> α [B,H,S,S] fp32.

    Chunked as the WKV-6 of one-hot values (``wkv_chunked``'s factors, split at the chunk
    middle) when the decays allow it and no gradient is recorded, else by exact fp64 prefix
    sums per query block, for which ``log_decay`` (the forward's ``w``) is used when given
    (more exact than ``log(decay)``; pass None when the decay was changed by an
    intervention)."""
    rr, kk = wide(r), wide(k)
    grad = recording(r, k, decay, u, *([] if log_decay is None else [log_decay]))
    fit = None if grad else _fit(decay, CHUNK, centred=True)
    if fit is not None:  # sources before the query; write_scale folded into k
        raw = _v6_chunked_raw(rr, _scaled(kk, write_scale), *fit)
    else:
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


def _v6_chunked_raw(r: torch.Tensor, k: torch.Tensor, c: int,
                    e: torch.Tensor) -> torch.Tensor:
    """α_raw [B,H,S,S] strictly below the diagonal by chunks of ``c`` (``e``: the cumulative
    decay products per chunk, wkv_chunked._fit); r, k [B,S,H,d]. Within a chunk as in
    wkv6_chunked (factors split at the chunk middle); earlier chunks through a d×(sources
    so far) state decayed by ``e^{A_C}`` per chunk, the chunk's write ``(k⊙e^{A_C-A})ᵀ``
    appended."""
    b, s, h, d = r.shape
    dec = _Decays(e, r.dtype)
    rb, kb = _blocks(r, c, r.dtype), _blocks(k, c, r.dtype)  # [G,C,d]
    mid = c // 2 - 1
    q = rb * (_shifted(dec.e64) * dec.inv64[:, mid:mid + 1]).to(r.dtype)
    src = kb * (dec.inv64 * dec.e64[:, mid:mid + 1]).to(r.dtype)
    own = torch.bmm(q, src.transpose(1, 2)).masked_fill_(_strict(c, r.device), 0.0)
    write = (kb * dec.tail).transpose(1, 2)  # [G,d,C]
    last = dec.last.view(b * h, -1, d)

    def carry(i: int, past: torch.Tensor, out: torch.Tensor) -> None:
        torch.mul(past, last[:, i, :, None], out=out)

    return _assemble(rb.mul_(dec.excl), own, write, carry, b, h, s)


def effective_attn_v7(r: torch.Tensor, decay: torch.Tensor, k: torch.Tensor,
                      kk: torch.Tensor, a: torch.Tensor,
                      write_scale: torch.Tensor | None = None) -> torch.Tensor:
    """r, decay, k (the modulated key), kk, a [B,S,H,d], write_scale [S] or None ->
    α [B,H,S,S] fp32.

    α_raw[t, i] is the weight of v_i in y_t: the WKV-7 output for one-hot values from a zero
    state. Chunked as in ``wkv_chunked`` (same notation): a chunk's own block is
    ``M_rk + M_rb (I - M_ba)⁻¹ M_ka`` and an earlier chunk's columns are read through
    ``Q_n`` from a d×(sources so far) "state" that grows by one chunk per step (``G`` on
    the old columns, the chunk's write ``H`` appended): O(S²·d) per head as matmuls. A
    decay too close to 0 for the chunked exponents takes the recurrence (same functional).
    ``write_scale`` scales the write of source i, i.e. column i (diagonal included)."""
    r, decay, k, kk, a = (wide(t) for t in (r, decay, k, kk, a))  # [B,S,H,d]
    b, s, h, d = r.shape
    fit = None if recording(r, decay, k, kk, a) else _fit(decay, V7_CHUNK, centred=False)
    if fit is None:  # the recurrence on one-hot values (value dimension S)
        values = torch.eye(s, dtype=r.dtype, device=r.device)[None, :, None, :]
        start = r.new_zeros(b, h, d, s)
        raw, _ = wkv7(r, decay, k, values.expand(b, s, h, s), kk, a, start, write_scale)
        return normalise(torch.tril(raw.transpose(1, 2))).float()
    return normalise(_v7_chunked_raw(r, _scaled(k, write_scale), kk, a, *fit)).float()


def _v7_chunked_raw(r: torch.Tensor, k: torch.Tensor, kk: torch.Tensor, a: torch.Tensor,
                    c: int, e: torch.Tensor) -> torch.Tensor:
    """α_raw [B,H,S,S] by chunks of ``c`` positions; inputs [B,S,H,d] (k write-scaled),
    ``e`` as in :func:`_v6_chunked_raw`. The one-hot values of a chunk are the identity,
    so wkv7_chunked's ``U0 = (I - M_ba)⁻¹ M_ka`` is [C,C]. Entries above the diagonal are
    exact zeros (never written; products of triangular factors)."""
    b, s, h, d = r.shape
    dt = r.dtype
    dec = _Decays(e, dt)
    rb, kb, kkb, ab = (_blocks(t, c, dt) for t in (r, k, kk, a))  # [G,C,d]
    bb = kkb * ab  # b = kk*a
    alpha = kkb.mul_(dec.excl).neg_()  # α̃
    inv = dec.inv64.to(dt)
    k_hat, b_hat = kb * inv, bb * inv
    strict = _strict(c, r.device)
    m_ka = torch.bmm(alpha, k_hat.transpose(1, 2)).masked_fill_(strict, 0.0)  # [G,C,C]
    lower = torch.bmm(alpha, b_hat.transpose(1, 2)).masked_fill_(strict, 0.0).neg_()
    lower.diagonal(dim1=1, dim2=2).fill_(1.0)  # I - M_ba
    wu = torch.linalg.solve_triangular(lower, torch.cat([alpha, m_ka], dim=-1), upper=False,
                                       unitriangular=True)
    wy, u0 = wu[:, :, :d], wu[:, :, d:]  # [G,C,d], [G,C,C]
    r_in = rb.mul_(dec.incl)
    above = strict.triu(1)
    m_rb = torch.bmm(r_in, b_hat.transpose(1, 2)).masked_fill_(above, 0.0)
    q = torch.baddbmm(r_in, m_rb, wy)  # reads the chunk-start state [G,C,d]
    own = torch.bmm(r_in, k_hat.transpose(1, 2)).masked_fill_(above, 0.0).baddbmm_(m_rb, u0)
    b_tail = (bb * dec.tail).transpose(1, 2)  # [G,d,C]
    g = torch.bmm(b_tail, wy)  # [G,d,d]
    g.diagonal(dim1=1, dim2=2).add_(dec.last)
    write = torch.baddbmm((kb * dec.tail).transpose(1, 2), b_tail, u0)  # [G,d,C]
    g = g.view(b * h, -1, d, d)

    def carry(i: int, past: torch.Tensor, out: torch.Tensor) -> None:
        torch.bmm(g[:, i], past, out=out)

    return _assemble(q, own, write, carry, b, h, s)


def _assemble(q: torch.Tensor, own: torch.Tensor, write: torch.Tensor, carry, b: int,
              h: int, s: int) -> torch.Tensor:
    """α_raw [B,H,S,S] from per-chunk pieces [B*H*N, ...]: ``own`` [C,C] blocks on the
    diagonal, earlier chunks' columns ``q_i @ past`` (written in place) where ``past``
    [B*H,d,iC] holds the sources before chunk i: ``carry(i, past, out)`` writes the chunk
    transition applied to the old columns, then the chunk's own write [d,C] is appended."""
    g, c, d = q.shape
    n = g // (b * h)
    q, own, write = (t.view(b * h, n, *t.shape[1:]) for t in (q, own, write))
    raw = q.new_zeros(b * h, n * c, n * c)
    past, spare = q.new_empty(b * h, d, n * c), q.new_empty(b * h, d, n * c)
    for i in range(n):
        rows, done = slice(i * c, (i + 1) * c), i * c
        if i:
            torch.bmm(q[:, i], past[:, :, :done], out=raw[:, rows, :done])
            carry(i, past[:, :, :done], spare[:, :, :done])
            past, spare = spare, past
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
