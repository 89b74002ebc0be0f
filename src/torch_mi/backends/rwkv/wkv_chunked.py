"""Chunked (block-parallel) WKV for prompts: the same numbers as the token-by-token
recurrences of ``wkv.py`` (to fp32 rounding), with the work inside a chunk done as matmuls
on the pieces of ``chunks.py`` (notation, exponents and layout there). Only the d×d state
update runs chunk after chunk. Given the same inputs the chunked WKV equals the recurrence
to ~1e-7 of its scale in fp32; through a whole model the per-head GroupNorm of a near-zero
head output (position 0, state still zero) can amplify such rounding differences ~10-20x,
as it does for any reordering (MIN_CHUNKED_LEN keeps short calls on the recurrence).

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
from .chunks import Chunks6, Chunks7, blocks, prepare6, prepare7, recording, unblock
from .wkv import wkv6, wkv7

MIN_CHUNKED_LEN = 16  # below this the recurrence is as fast (generation runs 1 token)


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


def _scan(state: torch.Tensor, g: torch.Tensor, h0: torch.Tensor,
          diagonal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """S_{n+1} = G_n S_n + H0_n over the chunks; state [B,H,d,d], g [B*H,N,d] (diagonal) or
    [B*H,N,d,d], h0 [B*H,N,d,d]. Returns (S_n at every chunk start [B*H*N,d,d], final
    state [B*H,d,d])."""
    bh, n, d = h0.shape[:3]
    starts = h0.new_empty(bh, n + 1, d, h0.shape[-1])
    starts[:, 0] = state.reshape(bh, d, -1)
    for i in range(n):  # (a batched matmul's out= into a strided view runs per matrix)
        if diagonal:
            torch.addcmul(h0[:, i], g[:, i, :, None], starts[:, i], out=starts[:, i + 1])
        else:
            starts[:, i + 1] = torch.baddbmm(h0[:, i], g[:, i], starts[:, i])
    return starts[:, :n].reshape(bh * n, d, -1), starts[:, n]


def wkv6_chunked(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
                 u: torch.Tensor, state: torch.Tensor, write_scale: torch.Tensor | None = None,
                 pieces: Chunks6 | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`wkv.wkv6`: r, k, v, w (decay in (0,1)) [B,S,H,d], u [H,d],
    state [B,H,d,d], ``write_scale`` [S] (scales the state write, not the bonus) ->
    (y [B,S,H,d], final state [B,H,d,d]). ``pieces``: ``prepare6`` of the same inputs
    when the caller already has them (effective attention reads them too)."""
    pieces = pieces or prepare6(r, k, w, u, write_scale)
    if pieces is None or recording(v, state):
        return wkv6(r, k, v, w, u, state, write_scale)
    x, d = pieces, r.shape[-1]
    vb = blocks(v, x.c, x.r_ex.dtype)  # [G,C,d]
    y = torch.bmm(x.att, vb)  # within the chunk
    h0 = torch.bmm(x.write, vb)  # the chunk's write [G,d,d]
    starts, final = _scan(state.to(vb.dtype), x.last, h0.view(x.b * x.h, -1, d, d), True)
    y = torch.baddbmm(y, x.r_ex, starts)  # + the chunk-start state read
    return unblock(y, x.b, x.h, x.s), final.view(state.shape).to(state.dtype)


def wkv7_chunked(r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 kk: torch.Tensor, a: torch.Tensor, state: torch.Tensor,
                 write_scale: torch.Tensor | None = None,
                 pieces: Chunks7 | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`wkv.wkv7`: r, w (decay), k (modulated key), v, kk, a
    [B,S,H,d], state [B,H,d,d], ``write_scale`` [S] (scales the write kᵀv; decay and
    rank-1 term still apply) -> (y [B,S,H,d], final state [B,H,d,d]). ``pieces`` as in
    :func:`wkv6_chunked` (``prepare7``)."""
    pieces = pieces or prepare7(r, w, k, kk, a, write_scale)
    if pieces is None or recording(v, state):
        return wkv7(r, w, k, v, kk, a, state, write_scale)
    x, d = pieces, r.shape[-1]
    vb = blocks(v, x.c, x.q.dtype)  # [G,C,d]
    vu = torch.cat([vb, torch.bmm(x.p, vb)], dim=1)  # [V ; U0] [G,2C,d]
    y = torch.bmm(x.m_r, vu)  # Y = Q S0 + Y0
    h0 = torch.bmm(x.tails, vu)  # S_C = G S0 + H0
    starts, final = _scan(state.to(vb.dtype), x.g, h0.view(x.b * x.h, -1, d, d), False)
    y = torch.baddbmm(y, x.q, starts)
    return unblock(y, x.b, x.h, x.s), final.view(state.shape).to(state.dtype)
