"""The WKV recurrences, exact and token by token, in fp32 (fp64 when
the model runs in fp64, for exactness checks).

State ``S`` [B,H,d,d] has rows = key dim and columns = value dim for both versions.

* RWKV-6: ``y_t = r_t (diag(u) k_tᵀv_t + S_{t-1})`` (output FIRST, with the bonus ``u``),
  then ``S_t = k_tᵀv_t + diag(w_t) S_{t-1}``.
* RWKV-7 (generalised delta rule): ``S_t = diag(w_t) S_{t-1} + b_t (α_tᵀ S_{t-1}) +
  k_tᵀv_t`` with ``α = -kk`` and ``b = kk*a``, then ``y_t = r_t S_t`` (the UPDATED state).

``w`` is the multiplicative decay in (0,1). The chunked (block-parallel) form in
``wkv_chunked`` must equal these loops. Each step is a few whole-state ops (a matmul for
r·S, one fused ``addcmul`` for decay + write; RWKV-7's two rank-1 writes as one [d,2]x[2,d]
matmul), which is what a one-token generation step costs. Value dimensions other than d
work too (effective attention runs them on one-hot values).
"""

from __future__ import annotations

import torch

from .ops import scaled, wide


def wkv6(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
         u: torch.Tensor, state: torch.Tensor,
         write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """r, k, v, w [B,S,H,d] (any float dtype), u [H,d], state [B,H,d,d] fp32 ->
    (y [B,S,H,d] fp32, final state [B,H,d,d] fp32). ``write_scale`` [S] (state knockout /
    steering) scales the state write kᵀv of each position, not the bonus ``u``."""
    r, k, v, w = (wide(t) for t in (r, k, v, w))
    bonus = (r * wide(u) * k).sum(-1, keepdim=True) * v  # r·(u⊙k) v [B,S,H,dv]
    k = scaled(k, write_scale)
    s = state
    out = []
    for t in range(r.shape[1]):  # a matmul and one fused update per step
        out.append(r[:, t, :, None, :] @ s)  # r S_{t-1} [B,H,1,dv]
        s = torch.addcmul(k[:, t, :, :, None] * v[:, t, :, None, :], w[:, t, :, :, None], s)
    return torch.cat(out, dim=2).transpose(1, 2) + bonus, s


def wkv7(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
         kk: torch.Tensor, a: torch.Tensor, state: torch.Tensor,
         write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """r, w, k (the modulated key), v, kk, a [B,S,H,d], state [B,H,d,d] fp32 ->
    (y [B,S,H,d] fp32, final state [B,H,d,d] fp32). ``write_scale`` [S] (state knockout /
    steering) scales the write kᵀv of each position; decay and rank-1 term still apply."""
    r, w, k, v, kk, a = (wide(t) for t in (r, w, k, v, kk, a))
    writes = torch.stack([-kk * a, scaled(k, write_scale)], dim=-1)  # [B,S,H,d,2]
    s = state
    out = []
    for t in range(r.shape[1]):  # one step per position (a generation step: one in all)
        y, s = _wkv7_step(r[:, t], w[:, t], writes[:, t], v[:, t], kk[:, t], s)
        out.append(y)
    return (out[0] if len(out) == 1 else torch.cat(out, dim=1)), s


def _wkv7_step(r: torch.Tensor, w: torch.Tensor, writes: torch.Tensor, v: torch.Tensor,
               kk: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of :func:`wkv7`: r, w, v, kk [B,H,d(v)], writes [b k] [B,H,d,2] -> (y
    [B,1,H,dv], state [B,H,d,dv]). Both rank-1 writes (b ⊗ αᵀS, k ⊗ v) in one matmul."""
    values = torch.cat([kk[:, :, None, :] @ s, v[:, :, None, :]], dim=2)  # [B,H,2,dv]
    s = torch.addcmul(writes @ values, w[..., None], s)
    return (r[:, :, None, :] @ s).transpose(1, 2), s  # r S_t
