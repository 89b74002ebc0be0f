"""Residual-stream steering vectors: the mean difference of captured activations between two
prompt sets, added back at chosen layers (and optionally positions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..errors import InputError
from ..hooks.interventions import Intervention
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..sampling import check_real
from .logit_lens import LENS_HOOKS


def _point(hook: str, layer: int) -> HookPoint:
    if hook not in LENS_HOOKS:
        raise InputError(f"unknown residual hook {hook!r}; choose one of {sorted(LENS_HOOKS)}")
    return LENS_HOOKS[hook](layer)


def mean_activation(model: LanguageModel, texts: Sequence[str], layer: int, *, hook: str = "resid_post",
                    position: str = "last") -> torch.Tensor:
    """Mean activation [D] over prompts, at the last real token or averaged over tokens."""
    if not texts:
        raise InputError("mean_activation needs at least one prompt")
    if position not in ("last", "mean"):
        raise InputError(f"position must be 'last' or 'mean', got {position!r}")
    ids, mask = model.require_tokenizer().encode_batch(list(texts))
    ids, mask = ids.to(model.device), mask.to(model.device)
    point = _point(hook, layer)
    acts = model.forward(ids, HookSpec().capture(point), attention_mask=mask)[point].float()
    if position == "last":  # left padding puts every last real token at -1
        return acts[:, -1].mean(dim=0)
    weights = mask.float()[..., None]  # [B,S,1]
    per_prompt = (acts * weights).sum(1) / weights.sum(1)
    return per_prompt.mean(dim=0)


def mean_difference_vector(model: LanguageModel, positive: Sequence[str], negative: Sequence[str], layer: int,
                           *, hook: str = "resid_post", position: str = "last") -> torch.Tensor:
    """mean(positive) - mean(negative) at one layer's residual hook: a steering vector [D]."""
    return (mean_activation(model, positive, layer, hook=hook, position=position)
            - mean_activation(model, negative, layer, hook=hook, position=position))


def steering_vector_hooks(vector: torch.Tensor, layers: Iterable[int], *, scale: float = 1.0,
                          hook: str = "resid_post",
                          positions: Sequence[int] | None = None,
                          relative: bool = False) -> HookSpec:
    """A HookSpec adding ``scale * vector`` at each layer's hook, at every position or only at
    ``positions`` (indices into the positions this forward computes).

    ``relative=True`` adds ``scale * |x| * vector / |vector|`` instead, ``|x|`` being the norm
    of the residual at that position, so ``scale=0.5`` moves every position by half its own
    norm whatever the raw vector's length (a mean difference can be short or long next to
    the residual: |v| = 86 against norms of 145 on SmolLM2)."""
    _check_vector(vector, scale, positions)
    if not isinstance(relative, bool):
        raise InputError(f"relative must be True or False, got {relative!r:.40}")
    if relative and float(vector.norm()) == 0.0:
        raise InputError("relative steering needs a non-zero vector (it is scaled to unit "
                         "length); this one is all zeros")
    delta = (vector.detach() / vector.norm() if relative else vector.detach()) * scale
    hooks = HookSpec()
    rows = None if positions is None else list(positions)
    for layer in layers:
        point = _point(hook, layer)
        if relative:
            hooks.intervene(point, Intervention.Apply(_relative_add(delta, rows)))
        elif rows is None:
            hooks.intervene(point, Intervention.Add(delta))
        else:
            hooks.intervene(point, Intervention.Apply(_positional_add(delta, rows)))
    return hooks


def _check_vector(vector: object, scale: object, positions: object) -> None:
    """InputError for a vector that is not a finite float tensor [D], a non-finite scale
    (a NaN scale would steer every token to NaN) or non-int positions."""
    if not isinstance(vector, torch.Tensor) or not vector.is_floating_point() or vector.dim() != 1:
        shape = list(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise InputError(f"steering vector must be a float tensor [D], got {shape}")
    if not bool(torch.isfinite(vector).all()):
        raise InputError("steering vector holds NaN or inf values; recompute it")
    check_real("steering scale", scale)
    if positions is not None and any(isinstance(p, bool) or not isinstance(p, int)
                                     for p in positions):
        raise InputError(f"steering positions must be ints, got {list(positions)!r:.60}")


def _positional_add(delta: torch.Tensor, positions: list[int]):
    def add(tensor: torch.Tensor, point: HookPoint) -> torch.Tensor:
        seq = tensor.shape[1]
        rows = [p for p in positions if -seq <= p < seq]
        if not rows:
            return tensor
        out = tensor.clone()
        out[:, rows] += delta.to(device=tensor.device, dtype=tensor.dtype)
        return out
    return add


def _relative_add(direction: torch.Tensor, positions: list[int] | None):
    """x + ‖x‖·direction at each position (all, or ``positions``); the norm in fp32."""
    def add(tensor: torch.Tensor, point: HookPoint) -> torch.Tensor:  # [B,S,D]
        norms = tensor.float().norm(dim=-1, keepdim=True)  # [B,S,1]
        step = norms * direction.to(device=tensor.device, dtype=torch.float32)  # [B,S,D]
        if positions is not None:
            seq = tensor.shape[1]
            keep = torch.zeros(seq, 1, dtype=torch.bool, device=tensor.device)
            keep[[p for p in positions if -seq <= p < seq]] = True
            step = step * keep
        return (tensor.float() + step).to(tensor.dtype)
    return add
