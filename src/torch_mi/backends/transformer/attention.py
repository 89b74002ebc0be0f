"""Causal self-attention with two interchangeable cores.

* fused: ``F.scaled_dot_product_attention`` (no scores or pattern ever materialised);
* explicit: scores -> soft-cap -> [hook_scores] -> mask -> [hook_attn_scores] -> softmax
  (fp32) -> [hook_pattern].

A layer takes the explicit core only when this call captures or intervenes on its scores
or pattern, or when the family soft-caps scores (SDPA cannot). Both cores agree (tested) on
finite inputs. On NaN they do not: PyTorch's fused CPU kernel returns zeros for a NaN query
row on short sequences (up to 15 positions, and single-position decoding steps) where the
explicit core gives NaN. With ``HookSpec(check_finite=True)`` both raise at the same point,
because q, k and v (and the KV cache) are checked before either core runs (HOOKS.md).
Per-head tensors are hooked in TransformerLens's [B,S,H,d] layout (free views of the
projection); the per-head output ``hook_result`` is computed only when it is hooked.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks.points import HookPoint
from ...hooks.runtime import HookRuntime
from .config.types import TransformerConfig
from .layers import linear, make_softcap
from .masks import LayerMask
from .norms import Norm, make_norm
from .points import TRANSFORMER_POINTS
from .rope import apply_rope


class PerHeadInputs(NamedTuple):
    """Normalised inputs, one per head ([B,S,H,D], [B,S,Hkv,D], [B,S,Hkv,D]): TL's split
    q/k/v inputs, used only when a per-head input point is intervened on."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


def _qk_norm(norm: nn.Module, t: torch.Tensor, hooks: HookRuntime, scale: HookPoint,
             normalized: HookPoint) -> torch.Tensor:
    """QK-norm of t [B,S,h,d]; hooked on TL's [B*S*h, d] rows when asked."""
    if isinstance(norm, Norm) and (hooks.is_active(scale) or hooks.is_active(normalized)):
        return norm.hooked(t.reshape(-1, t.shape[-1]), hooks, scale, normalized).view(t.shape)
    return norm(t)


class Attention(nn.Module):
    def __init__(self, config: TransformerConfig, layer: int) -> None:
        super().__init__()
        c = config
        self.layer = layer
        self.n_heads, self.n_kv, self.head_dim = c.num_attention_heads, c.num_kv_heads, c.head_dim
        self.hidden_size = c.hidden_size
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

    def forward(self, x: torch.Tensor | PerHeadInputs, ctx) -> torch.Tensor:
        hooks, p = ctx.hooks, self.points
        q, k, v = self.project(x)  # [B,S,H|Hkv,d] each
        q, k, v = hooks.fire(p.q, q), hooks.fire(p.k, k), hooks.fire(p.v, v)
        q = _qk_norm(self.q_norm, q, hooks, p.q_norm_scale, p.q_norm_normalized)
        k = _qk_norm(self.k_norm, k, hooks, p.k_norm_scale, p.k_norm_normalized)
        cos, sin = ctx.rope[self.layer_type]
        q = hooks.fire(p.rot_q, apply_rope(q.transpose(1, 2), cos, sin).transpose(1, 2))
        k = hooks.fire(p.rot_k, apply_rope(k.transpose(1, 2), cos, sin).transpose(1, 2))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B,H|Hkv,S,d]
        if ctx.kv_cache is not None:
            k, v = ctx.kv_cache.append(self.layer, k, v)  # [B,Hkv,past+S,d]
            if hooks.check_finite:  # keys from earlier calls were never checked here
                hooks.require_finite(p.rot_k, k, "the KV cache's keys (earlier calls included)")
                hooks.require_finite(p.v, v, "the KV cache's values (earlier calls included)")
        mask = ctx.masks[self.layer_type]
        if self.always_explicit or any(hooks.is_active(pt)
                                       for pt in (p.scores, p.attn_scores, p.pattern)):
            z = self.explicit_core(q, k, v, mask, hooks)
        else:
            z = self.fused_core(q, k, v, mask)
        z = hooks.fire(p.z, z.transpose(1, 2))  # [B,S,H,d]
        return self.output(z, hooks)

    def project(self, x: torch.Tensor | PerHeadInputs):
        """q [B,S,H,d], k and v [B,S,Hkv,d]: one fused matmul, or per-head inputs."""
        h, kv, d = self.n_heads, self.n_kv, self.head_dim
        if isinstance(x, PerHeadInputs):
            weights = self.qkv.weight.split(self.split_sizes)  # [h*d, D] each
            biases = (self.qkv.bias.split(self.split_sizes) if self.qkv.bias is not None
                      else (None, None, None))
            out = []
            for inp, w, bias, heads in zip(x, weights, biases, (h, kv, kv), strict=True):
                y = torch.einsum("bshD,hdD->bshd", inp, w.view(heads, d, -1))
                out.append(y if bias is None else y + bias.view(heads, d))
            return tuple(out)
        b, s, _ = x.shape
        q, k, v = self.qkv(x).split(self.split_sizes, dim=-1)
        return q.view(b, s, h, d), k.view(b, s, kv, d), v.view(b, s, kv, d)

    def output(self, z: torch.Tensor, hooks: HookRuntime) -> torch.Tensor:
        """o_proj of z [B,S,H,d]; the sum of the per-head results [B,S,H,D] when hooked."""
        b, s = z.shape[:2]
        point = self.points.result
        if not hooks.is_active(point):
            return self.o_proj(z.reshape(b, s, self.n_heads * self.head_dim))
        # As TL with use_attn_result: the output is the sum of the per-head results (o_proj
        # up to fp32 summation order), so hooking them costs no second o_proj.
        out = hooks.fire(point, self.per_head_results(z)).sum(dim=2)
        return out if self.o_proj.bias is None else out + self.o_proj.bias

    def per_head_results(self, z: torch.Tensor) -> torch.Tensor:
        """What each head writes to the residual, z_h W_O,h [B,S,H,D] (no bias)."""
        w = self.o_proj.weight.view(self.hidden_size, self.n_heads, self.head_dim)
        # One matmul per head over the head-major z [B,H,S,d] (contiguous from the cores).
        per_head = torch.matmul(z.transpose(1, 2), w.permute(1, 2, 0))  # [B,H,S,D]
        return per_head.transpose(1, 2)  # [B,S,H,D] view

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
        scores = hooks.fire(p.attn_scores, scores)  # after the mask (TL)
        pattern = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        if mask.may_empty_rows or hooks.intervenes(p.scores) or hooks.intervenes(p.attn_scores):
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
