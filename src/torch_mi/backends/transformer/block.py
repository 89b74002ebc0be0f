"""One decoder block and the per-call context every block reads.

    [resid_pre] -> ln1 [ln1.hook_normalized] -> attention [attn_out] -> h + a [resid_mid]
    -> ln2 [mlp.hook_pre] -> act(gate)*up [mlp.hook_hidden] -> down [mlp.hook_post]
    -> post-FF norm [hook_mlp_out] -> h + m [resid_post]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...hooks.cache import HookCache
from ...hooks.runtime import HookRuntime
from .attention import Attention
from .config.types import TransformerConfig
from .kv_cache import KVCache
from .layers import make_mlp, make_norm
from .masks import LayerMask
from .points import TRANSFORMER_POINTS


@dataclass
class ForwardContext:
    """Per-call side inputs shared by every layer."""

    hooks: HookRuntime
    rope: dict[str, tuple[torch.Tensor, torch.Tensor]]  # layer type -> cos, sin [B,1,S,r]
    masks: dict[str, LayerMask]  # layer type -> mask
    kv_cache: KVCache | None = None
    cache: HookCache | None = None  # what this call returns


class Block(nn.Module):
    def __init__(self, config: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.ln1 = make_norm(config)
        self.attn = Attention(config, layer)
        self.ln1_post = make_norm(config) if config.use_post_norms else nn.Identity()
        self.ln2 = make_norm(config)
        self.mlp = make_mlp(config)
        self.ln2_post = make_norm(config) if config.use_post_norms else nn.Identity()
        self.points = TRANSFORMER_POINTS.layer_points(layer)

    def forward(self, h: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hooks, p = ctx.hooks, self.points
        h = hooks.fire(p.resid_pre, h)  # [B,S,D]
        x = hooks.fire(p.ln1, self.ln1(h))
        a = hooks.fire(p.attn_out, self.ln1_post(self.attn(x, ctx)))
        h = hooks.fire(p.resid_mid, h + a)
        x = hooks.fire(p.mlp_pre, self.ln2(h))
        m = hooks.fire(p.mlp_hidden, self.mlp.hidden(x))  # [B,S,I]
        m = hooks.fire(p.mlp_post, self.mlp.output(m))
        m = hooks.fire(p.mlp_out, self.ln2_post(m))
        return hooks.fire(p.resid_post, h + m)
