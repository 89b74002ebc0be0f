"""RWKV-7 (Goose) time mix: static token shift, value residual, generalised delta rule.

    δ = shift(x) - x;  x_c = x + δ*x_c for c in (r, w, k, v, a, g)
    r, k = projections                                             [rwkv.hook_r|k]
    v = v_proj(x_v); layer 0 publishes v_first, later layers
        v += (v_first - v) * sigmoid(v_lora(x_v))                  [rwkv.hook_v]
    w = -e^-0.5 * sigmoid(w_lora_tanh(x_w))  (fp32)                [rwkv.hook_w]
    decay = exp(w) in (e^-e^-0.5, 1)                               [rwkv.hook_decay]
    a = sigmoid(a_lora(x_a));  g = g_lora_sigmoid(x_g)             [rwkv.hook_a|g]
    kk = L2normalise_per_head(k*k_k);  k' = k*(1 + (a-1)*k_a)      [rwkv.hook_kk]
    y = WKV-7(r, decay, k', v, kk, a) -> final state               [rwkv.hook_state]
    effective attention from r, decay, k', kk, a (if captured) [rwkv.hook_effective_attn]
    out = o_proj((GroupNorm_H(y) + Σ_d(r*k'*r_k) v) * g)   (eps = head_dim * norm_eps)

The decay is ``exp(-e^-0.5 * sigmoid(z))``; BlinkDL's kernel input ``-softplus(-z) - 0.5``
with ``exp(-exp(.))`` is the same number (``exp(-softplus(-z) - 0.5)`` is NOT the decay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks.runtime import HookRuntime
from .chunks import prepare7
from .config import RwkvConfig
from .effective_attn import effective_attn_v7
from .ops import LoRA, group_norm, heads, linear, merge, param, token_shift, wide
from .wkv import wkv7
from .wkv_chunked import wkv7_chunked

DECAY_SCALE = math.exp(-0.5)  # 0.6065306597126334


@dataclass
class V7Context:
    """What layer 0 hands to the later layers of the same call: v_first [B,S,H,d]."""

    v_first: torch.Tensor | None = None


class TimeMix7(nn.Module):
    def __init__(self, config: RwkvConfig, layer: int) -> None:
        super().__init__()
        d, lo = config.hidden_size, config.lora_dims
        self.layer, self.head_dim = layer, config.head_dim
        self.eps = config.group_norm_eps()
        for name in ("r", "w", "k", "v", "a", "g"):
            setattr(self, f"x_{name}", param(1, 1, d))
        self.k_k, self.k_a = param(d), param(d)
        self.r_k = param(config.num_heads, config.head_dim)
        self.r_proj, self.k_proj, self.v_proj, self.o_proj = (linear(d, d) for _ in range(4))
        self.w_lora = LoRA(d, lo.decay, bias=True)
        self.a_lora = LoRA(d, lo.a, bias=True)
        self.g_lora = LoRA(d, lo.gate, bias=False)
        self.v_lora = LoRA(d, lo.v, bias=True) if layer > 0 else None
        self.g_norm = nn.GroupNorm(config.num_heads, d, eps=self.eps)
        self.g_norm.requires_grad_(False)

    def value(self, xv: torch.Tensor, ctx: V7Context, hooks: HookRuntime, p) -> torch.Tensor:
        """The value [B,S,H,d] after the value-residual mix (layer 0 sets v_first)."""
        v = heads(self.v_proj(xv), self.head_dim)
        if self.v_lora is not None:
            if ctx.v_first is None:
                raise RuntimeError("internal error: RWKV-7 layer 0 did not set v_first")
            gate = heads(torch.sigmoid(self.v_lora(xv)), self.head_dim)
            v = v + (ctx.v_first.to(v.dtype) - v) * gate
        v = hooks.fire(p.v, v)
        if self.v_lora is None:
            ctx.v_first = v
        return v

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None, state: torch.Tensor,
                hooks: HookRuntime, p, ctx: V7Context,
                write_scale: torch.Tensor | None = None, *,
                chunked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ln1 output [B,S,D]; prev [B,D] or None; state [B,H,d,d] fp32; write_scale
        [S] (state knockout/steering) or None -> (time-mix output [B,S,D], final state)."""
        n = self.head_dim
        dx = token_shift(x, prev)
        mix = torch.stack([self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g])
        xr, xw, xk, xv, xa, xg = torch.addcmul(x, dx, mix).unbind(0)  # one pass: [6,B,S,D]
        r = hooks.fire(p.r, heads(self.r_proj(xr), n))
        k = hooks.fire(p.k, heads(self.k_proj(xk), n))
        v = self.value(xv, ctx, hooks, p)
        z = wide(self.w_lora(xw, torch.tanh))
        w = hooks.fire(p.w, heads(-DECAY_SCALE * torch.sigmoid(z), n))  # log-decay, fp32
        decay = hooks.fire(p.decay, torch.exp(w))
        a = hooks.fire(p.a, heads(torch.sigmoid(self.a_lora(xa)), n))
        g = hooks.fire(p.g, heads(self.g_lora(xg, torch.sigmoid), n))
        kk = hooks.fire(p.kk, F.normalize(k * heads(self.k_k, n), dim=-1))
        k_mod = k * (1 + (a - 1) * heads(self.k_a, n))
        attention = hooks.is_active(p.effective_attn)  # [B,H,S,S], only when asked for
        # The chunk pieces, built once for the chunked WKV and effective attention.
        pieces = prepare7(r, decay, k_mod, kk, a, write_scale) if chunked or attention else None
        if chunked and pieces is not None:  # block-parallel, the recurrence's numbers
            y, state = wkv7_chunked(r, decay, k_mod, v, kk, a, state, write_scale, pieces)
        else:
            y, state = wkv7(r, decay, k_mod, v, kk, a, state, write_scale)
        state = hooks.fire(p.state, state)
        if attention:
            hooks.fire(p.effective_attn, effective_attn_v7(r, decay, k_mod, kk, a, write_scale,
                                                           pieces))
        y = group_norm(y, self.g_norm.weight, self.g_norm.bias, self.eps)  # [B,S,D] fp32
        bonus = (wide(r) * wide(k_mod) * wide(self.r_k)).sum(-1, keepdim=True) * wide(v)
        return self.o_proj(((y + merge(bonus)).to(x.dtype)) * merge(g)), state
