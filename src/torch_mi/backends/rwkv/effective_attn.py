"""Effective attention of an RWKV time mix: ``blocks.{i}.rwkv.hook_effective_attn`` [B,H,S,S].

The WKV output is linear in the values: ``y_t = Σ_{i<=t} α_raw[t,i] v_i`` (plus the
contribution of an incoming state, which is left out), with coefficients that depend only
on r, k and the decays (inventory §5.9):

* RWKV-6 (prefix sums of the log-decay, fp64; blocks of queries, earlier sources by one
  matmul through the block start):
  ``α_raw[t,i] = Σ_d r_t[d] k_i[d] Π_{j=i+1}^{t-1} decay_j[d]`` for ``i < t`` and the bonus
  ``α_raw[t,t] = Σ_d r_t[d] k_t[d] u[d]``.
* RWKV-7 (backward linear functional through the diag + rank-1 transitions
  ``T_j = diag(decay_j) + b_j act_aᵀ_j`` with ``act_a = -kk``, ``b = kk ⊙ a``):
  ``l = r_t``, ``α_raw[t,t] = l·k_t``, then for ``j = t..1``: ``l ← l T_j``,
  ``α_raw[t,j-1] = l·k_{j-1}`` (k is the modulated key the state is written with).

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
import torch.nn.functional as F

from ...errors import HookError
from ...hooks.points import HookPoint
from ...hooks.runtime import HookRuntime
from .ops import wide

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
    """ReLU then L1 per row of [B,H,S,S] (causal entries already zero)."""
    pos = torch.relu(raw)
    return pos / (pos.sum(-1, keepdim=True) + EPS)


def effective_attn_v6(r: torch.Tensor, k: torch.Tensor, decay: torch.Tensor,
                      u: torch.Tensor, write_scale: torch.Tensor | None = None,
                      log_decay: torch.Tensor | None = None) -> torch.Tensor:
    """r, k, decay [B,S,H,d], u [H,d], write_scale [S] or None -> α [B,H,S,S] fp32.

    ``log_decay`` (the forward's ``w``) is used for the prefix sums when given (more exact
    than ``log(decay)``); pass None when the decay was changed by an intervention."""
    rr, kk = (wide(t).transpose(1, 2) for t in (r, k))  # [B,H,S,d]
    logw = torch.log(decay.double()) if log_decay is None else log_decay.double()
    logw = logw.clamp(min=LOG_FLOOR).transpose(1, 2)  # [B,H,S,d]
    inclusive = logw.cumsum(2)  # Σ_{j<=i} log w_j
    exclusive = inclusive - logw  # Σ_{j<t} log w_j
    s = rr.shape[2]
    rows = []
    for q0 in range(0, s, QUERY_CHUNK):
        q1 = min(s, q0 + QUERY_CHUNK)
        rows.append(_v6_rows(rr, kk, inclusive, exclusive, q0, q1))
    raw = torch.cat(rows, dim=2)  # [B,H,S,S], zero on and above the diagonal
    if write_scale is not None:
        raw = raw * write_scale.to(raw.dtype)  # source columns (the bonus diagonal is not)
    diag = (rr * kk * wide(u)[None, :, None, :]).sum(-1)  # bonus [B,H,S]
    raw = raw + torch.diag_embed(diag)
    return normalise(raw).float()


def effective_attn_v7(r: torch.Tensor, decay: torch.Tensor, k: torch.Tensor,
                      kk: torch.Tensor, a: torch.Tensor,
                      write_scale: torch.Tensor | None = None) -> torch.Tensor:
    """r, decay, k (the modulated key), kk, a [B,S,H,d], write_scale [S] or None ->
    α [B,H,S,S] fp32. One backward sweep over j carries every query's functional at once."""
    r, decay, k, kk, a = (wide(t).transpose(1, 2) for t in (r, decay, k, kk, a))  # [B,H,S,d]
    act_a, b_vec = -kk, kk * a
    s = r.shape[2]
    cols = []  # column j: α_raw[:, j] for every query [B,H,S]
    lin = r[:, :, :0]  # the functionals l of queries j..S-1 [B,H,S-j,d]
    for j in range(s - 1, -1, -1):
        lin = torch.cat([r[:, :, j:j + 1], lin], dim=2)  # query j starts with l = r_j
        cols.append(F.pad((lin * k[:, :, j, None, :]).sum(-1), (j, 0)))  # rows < j: 0
        if j > 0:  # l ← l T_j = l ⊙ w_j + (l·b_j) act_a_j
            dot = (lin * b_vec[:, :, j, None, :]).sum(-1, keepdim=True)
            lin = lin * decay[:, :, j, None, :] + dot * act_a[:, :, j, None, :]
    raw = torch.stack(cols[::-1], dim=-1)  # [B,H,S(query),S(source)]
    if write_scale is not None:
        raw = raw * write_scale.to(raw.dtype)  # the write of source i (diagonal included)
    return normalise(raw).float()


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
