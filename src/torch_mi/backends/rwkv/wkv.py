"""The WKV recurrences, exact and token by token, in fp32 (fp64 when
the model runs in fp64, for exactness checks).

State ``S`` [B,H,d,d] has rows = key dim and columns = value dim for both versions.

* RWKV-6: ``y_t = r_t (diag(u) k_tᵀv_t + S_{t-1})`` (output FIRST, with the bonus ``u``),
  then ``S_t = k_tᵀv_t + diag(w_t) S_{t-1}``.
* RWKV-7 (generalised delta rule): ``S_t = diag(w_t) S_{t-1} + b_t (α_tᵀ S_{t-1}) +
  k_tᵀv_t`` with ``α = -kk`` and ``b = kk*a``, then ``y_t = r_t S_t`` (the UPDATED state).

``w`` is the multiplicative decay in (0,1). A chunked (block-parallel) form is later work;
these loops are the reference it must equal.
"""

from __future__ import annotations

import torch

from .ops import wide


def wkv6(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
         u: torch.Tensor, state: torch.Tensor,
         write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """r, k, v, w [B,S,H,d] (any float dtype), u [H,d], state [B,H,d,d] fp32 ->
    (y [B,S,H,d] fp32, final state [B,H,d,d] fp32). ``write_scale`` [S] (state knockout /
    steering) scales the state write kᵀv of each position, not the bonus ``u``."""
    r, k, v, w = (wide(t) for t in (r, k, v, w))
    u = wide(u)[None, :, :, None]  # [1,H,d,1]
    scale = None if write_scale is None else write_scale.to(r.dtype).tolist()
    s = state
    out = []
    for t in range(r.shape[1]):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # [B,H,d,d]
        out.append((r[:, t, :, :, None] * (u * kv + s)).sum(-2))  # [B,H,d]
        s = (kv if scale is None else kv * scale[t]) + w[:, t, :, :, None] * s
    return torch.stack(out, dim=1), s


def wkv7(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
         kk: torch.Tensor, a: torch.Tensor, state: torch.Tensor,
         write_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """r, w, k (the modulated key), v, kk, a [B,S,H,d], state [B,H,d,d] fp32 ->
    (y [B,S,H,d] fp32, final state [B,H,d,d] fp32). ``write_scale`` [S] (state knockout /
    steering) scales the write kᵀv of each position; decay and rank-1 term still apply."""
    r, w, k, v, kk, a = (wide(t) for t in (r, w, k, v, kk, a))
    b = kk * a
    scale = None if write_scale is None else write_scale.to(r.dtype).tolist()
    s = state
    out = []
    for t in range(r.shape[1]):
        removed = (-kk[:, t, :, :, None] * s).sum(-2)  # αᵀS [B,H,d(value)]
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # [B,H,d,d]
        s = (w[:, t, :, :, None] * s + b[:, t, :, :, None] * removed[:, :, None, :]
             + (kv if scale is None else kv * scale[t]))
        out.append((r[:, t, :, :, None] * s).sum(-2))
    return torch.stack(out, dim=1), s
