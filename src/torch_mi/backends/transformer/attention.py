"""Causal self-attention with two interchangeable cores.

* fused: ``F.scaled_dot_product_attention`` (no scores or pattern ever materialised);
* explicit: scores -> soft-cap -> [hook_scores] -> mask -> softmax (fp32) -> [hook_pattern].

A layer takes the explicit core only when this call captures or intervenes on its scores
or pattern, or when the family soft-caps scores (SDPA cannot). Both cores agree (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks.runtime import HookRuntime
from .config.types import TransformerConfig
from .layers import linear, make_norm, make_softcap
from .masks import LayerMask
from .points import TRANSFORMER_POINTS
from .rope import apply_rope


class Attention(nn.Module):
    def __init__(self, config: TransformerConfig, layer: int) -> None:
        super().__init__()
        c = config
        self.layer = layer
        self.n_heads, self.n_kv, self.head_dim = c.num_attention_heads, c.num_kv_heads, c.head_dim
        self.groups = c.num_kv_groups
        q_rows, kv_rows = c.num_attention_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.split_sizes = (q_rows, kv_rows, kv_rows)
        self.qkv = linear(c.hidden_size, q_rows + 2 * kv_rows, c.qkv_bias)  # rows [Q | K | V]
        self.o_proj = linear(q_rows, c.hidden_size, c.o_proj_bias)
        self.q_norm = make_norm(c, c.head_dim) if c.qk_norm else nn.Identity()
        self.k_norm = make_norm(c, c.head_dim) if c.qk_norm else nn.Identity()
        self.scores_softcap = make_softcap(c.attn_logit_softcapping)
        self.always_explicit = c.attn_logit_softcapping is not None
        self.scale = c.attention_scale
        self.layer_type = c.layer_types[layer]
        self.points = TRANSFORMER_POINTS.layer_points(layer)

    def forward(self, x: torch.Tensor, ctx) -> torch.Tensor:
        b, s, _ = x.shape
        hooks, p = ctx.hooks, self.points
        q, k, v = self.qkv(x).split(self.split_sizes, dim=-1)
        q = hooks.fire(p.q, q.view(b, s, self.n_heads, self.head_dim).transpose(1, 2))  # [B,H,S,d]
        k = hooks.fire(p.k, k.view(b, s, self.n_kv, self.head_dim).transpose(1, 2))  # [B,Hkv,S,d]
        v = hooks.fire(p.v, v.view(b, s, self.n_kv, self.head_dim).transpose(1, 2))  # [B,Hkv,S,d]
        cos, sin = ctx.rope[self.layer_type]
        q = hooks.fire(p.rot_q, apply_rope(self.q_norm(q), cos, sin))
        k = hooks.fire(p.rot_k, apply_rope(self.k_norm(k), cos, sin))
        if ctx.kv_cache is not None:
            k, v = ctx.kv_cache.append(self.layer, k, v)  # [B,Hkv,past+S,d]
        mask = ctx.masks[self.layer_type]
        if self.always_explicit or hooks.is_active(p.scores) or hooks.is_active(p.pattern):
            z = self.explicit_core(q, k, v, mask, hooks)
        else:
            z = self.fused_core(q, k, v, mask)
        z = hooks.fire(p.z, z.transpose(1, 2))  # [B,S,H,d]
        return self.o_proj(z.reshape(b, s, self.n_heads * self.head_dim))

    def fused_core(self, q, k, v, mask: LayerMask) -> torch.Tensor:
        # enable_gqa reads KV heads in place: faster than repeating them (measured on CPU).
        gqa = self.groups > 1
        if mask.kind == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                                  enable_gqa=gqa)
        allowed = mask.allowed if mask.kind == "dense" else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale,
                                              enable_gqa=gqa)

    def explicit_core(self, q, k, v, mask: LayerMask, hooks: HookRuntime) -> torch.Tensor:
        p = self.points
        scores = self.grouped_matmul(q, k.transpose(2, 3)).mul_(self.scale)  # [B,H,Sq,Sk]
        scores = hooks.fire(p.scores, self.scores_softcap(scores))  # before any mask
        additive = mask.additive(scores.dtype, scores.device)
        if additive is not None:  # in place unless someone holds the pre-mask scores
            scores = scores + additive if hooks.is_active(p.scores) else scores.add_(additive)
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        if mask.may_empty_rows or hooks.intervenes(p.scores):
            # A row with no visible key (padding, full knockout) attends to nothing, not NaN.
            dead = torch.isneginf(scores.amax(dim=-1, keepdim=True))
            pattern = pattern.masked_fill(dead, 0.0)
        pattern = hooks.fire(p.pattern, pattern)  # [B,H,Sq,Sk]
        return self.grouped_matmul(pattern, v)

    def grouped_matmul(self, a: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """a [B,H,Sq,n] @ kv [B,Hkv,n,m] with query head h reading KV head h // groups, as
        one matmul per KV head over its stacked query heads (no repeated K/V copies)."""
        if self.groups == 1:
            return torch.matmul(a, kv)
        b, h, s, n = a.shape
        stacked = a.reshape(b, self.n_kv, self.groups * s, n)  # [B,Hkv,g*Sq,n]
        return torch.matmul(stacked, kv).view(b, h, s, kv.shape[-1])
