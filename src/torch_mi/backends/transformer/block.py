"""One decoder block and the per-call context every block reads.

    [resid_pre] -> ln1 [ln1.hook_scale, ln1.hook_normalized, attn.hook_in] -> attention
    -> post-attention norm (Gemma 2/3) [hook_attn_out] -> h + a [resid_mid]
    -> [hook_mlp_in] -> ln2 [ln2.hook_scale, ln2.hook_normalized, mlp.hook_in]
    -> MLP [mlp.hook_pre, mlp.hook_pre_linear, mlp.hook_post] [mlp.hook_out]
    -> post-FF norm [hook_mlp_out] -> h + m [resid_post]

TL's per-head attention inputs (``hook_attn_in``, ``hook_q_input``/``k``/``v``) are views of
resid_pre when only captured; intervened on, the block takes TL's split path (ln1 and the
Q/K/V projections applied per head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...hooks.cache import HookCache
from ...hooks.runtime import HookRuntime
from .attention import Attention, PerHeadInputs
from .config.types import TransformerConfig
from .kv_cache import KVCache
from .layers import make_mlp
from .masks import LayerMask
from .norms import NoNorm, make_norm
from .points import TRANSFORMER_POINTS


@dataclass
class ForwardContext:
    """Per-call side inputs shared by every layer."""

    hooks: HookRuntime
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer type -> cos, sin [B,1,S,r]
    masks: dict[str, LayerMask]  # layer type -> mask
    kv_cache: KVCache | None = None
    cache: HookCache | None = None  # what this call returns


def per_head(h: torch.Tensor, heads: int) -> torch.Tensor:
    """h [B,S,D] seen as [B,S,heads,D] (a view: no copy)."""
    return h[:, :, None, :].expand(h.shape[0], h.shape[1], heads, h.shape[2])


class Block(nn.Module):
    def __init__(self, config: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = make_norm(config)
        self.attn = Attention(config, layer)
        self.ln1_post = make_norm(config) if config.use_post_norms else NoNorm()
        self.ln2 = make_norm(config)
        self.mlp = make_mlp(config)
        self.ln2_post = make_norm(config) if config.use_post_norms else NoNorm()
        self.n_heads, self.n_kv = config.num_attention_heads, config.num_kv_heads
        self.points = TRANSFORMER_POINTS.layer_points(layer)

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hooks, p = ctx.hooks, self.points
        h = hooks.fire(p.resid_pre, h)  # [B,S,D]
        a = self.attn(self.attention_input(h, hooks), ctx)
        a = self.ln1_post.hooked(a, hooks, p.ln1_post_scale, p.ln1_post_normalized)
        a = hooks.fire(p.attn_out, a)
        h = hooks.fire(p.resid_mid, h + a)
        x = self.ln2.hooked(hooks.fire(p.mlp_in, h), hooks, p.ln2_scale, p.ln2_normalized)
        m = self.mlp(hooks.fire(p.mlp_pre, x), hooks, p)
        m = hooks.fire(p.mlp_post, m)
        m = self.ln2_post.hooked(m, hooks, p.ln2_post_scale, p.ln2_post_normalized)
        m = hooks.fire(p.mlp_out, m)
        return hooks.fire(p.resid_post, h + m)

    def attention_input(self, h: torch.Tensor, hooks: HookRuntime) -> torch.Tensor | PerHeadInputs:
        """ln1(h) [B,S,D]; or TL's per-head normalised inputs when one is intervened on."""
        p = self.points
        inputs = ((p.attn_in, self.n_heads), (p.q_input, self.n_heads),
                  (p.k_input, self.n_kv), (p.v_input, self.n_kv))
        if not any(hooks.intervenes(point) for point, _ in inputs):
            for point, heads in inputs:
                if hooks.is_active(point):  # captured only: a view, the fused path goes on
                    hooks.fire(point, per_head(h, heads))
            return hooks.fire(p.ln1_out, self.ln1.hooked(h, hooks, p.ln1_scale, p.ln1_normalized))
        shared = hooks.fire(p.attn_in, per_head(h, self.n_heads)) if hooks.is_active(
            p.attn_in) else None
        split = []
        for point, heads in inputs[1:]:
            x = hooks.fire(point, shared if shared is not None else per_head(h, heads))
            x = self.ln1.hooked(x, hooks, p.ln1_scale, p.ln1_normalized)
            split.append(hooks.fire(p.ln1_out, x))
        return PerHeadInputs(*split)
