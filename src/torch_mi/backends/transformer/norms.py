"""Norms with HF's exact numerics, and TransformerLens's two hook points per norm.

``norm(x)`` is the fast path (one fused kernel in fp32). ``norm.hooked(x, hooks, scale,
normalized)`` also serves TL's ``hook_scale`` (the rms, or the std for LayerNorm; [..., 1])
and ``hook_normalized`` (the input, centred for LayerNorm, divided by the scale: BEFORE the
gain), computed in fp32 for lower precisions as TL does. Captured only, the output is the
fast path's; intervened on, the output is rebuilt from the (changed) normalised input.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...hooks.points import HookPoint
from ...hooks.runtime import HookRuntime
from .config.types import NormType, TransformerConfig


class Norm(nn.Module):
    """Shared statistics and hook logic; subclasses define ``forward`` and ``apply_gain``."""

    centred: ClassVar[bool] = False

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)
        self.eps = eps

    def statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale [..., 1], centred input [..., D]), in fp32 for low precisions."""
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        if self.centred:
            xf = xf - xf.mean(-1, keepdim=True)
        return (xf.pow(2).mean(-1, keepdim=True) + self.eps).sqrt(), xf

    def apply_gain(self, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def hooked(self, x: torch.Tensor, hooks: HookRuntime, scale_point: HookPoint,
               normalized_point: HookPoint) -> torch.Tensor:
        if not (hooks.is_active(scale_point) or hooks.is_active(normalized_point)):
            return self(x)
        scale, centred = self.statistics(x)
        if not (hooks.intervenes(scale_point) or hooks.intervenes(normalized_point)):
            hooks.fire(scale_point, scale)
            hooks.fire(normalized_point, centred / scale)
            return self(x)
        scale = hooks.fire(scale_point, scale)
        normalized = hooks.fire(normalized_point, centred / scale)
        return self.apply_gain(normalized, x.dtype)


class RMSNorm(Norm):
    """LLaMA RMSNorm: normalise in fp32, cast back, then multiply by the weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # one fused kernel, same arithmetic as below
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)

    def apply_gain(self, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.weight * normalized.to(dtype)


class GemmaRMSNorm(Norm):
    """Gemma RMSNorm: everything in fp32 with a (1 + w) weight, cast back last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + self.weight.float()
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), scale, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * scale).type_as(x)

    def apply_gain(self, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (normalized.float() * (1.0 + self.weight.float())).to(dtype)


class LayerNorm(Norm):
    """Standard LayerNorm with weight and bias (StarCoder2)."""

    centred = True

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__(dim, eps)
        self.bias = nn.Parameter(torch.empty(dim), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)

    def apply_gain(self, normalized: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return normalized.to(dtype) * self.weight + self.bias


class NoNorm(nn.Identity):
    """No norm at this place (families without post-norms): hooks are never declared."""

    def hooked(self, x: torch.Tensor, hooks: HookRuntime, scale_point: HookPoint,
               normalized_point: HookPoint) -> torch.Tensor:
        return x


def make_norm(config: TransformerConfig, dim: int | None = None) -> Norm:
    dim = config.hidden_size if dim is None else dim
    if config.norm_type is NormType.LayerNorm:
        return LayerNorm(dim, config.norm_eps)
    if config.norm_type is NormType.GemmaRmsNorm:
        return GemmaRMSNorm(dim, config.norm_eps)
    return RMSNorm(dim, config.norm_eps)
