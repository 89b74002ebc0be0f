"""Interventions: what to do to the tensor at a hook point.

An intervention kind is a small frozen dataclass that subclasses :class:`Intervention` and
implements ``apply(tensor, point, call) -> tensor``, where ``call`` is the per-forward
:class:`~torch_mi.hooks.call.ForwardCall` (the cache being filled and scratch space that
lives for one forward). ``apply`` must not modify ``tensor`` in place unless the kind sets
``mutates_input = True`` (then a capture at the same point is protected by a copy). A new
kind (a dictionary splice, a transcoder write, a gradient tap) is a new class in its own
module; nothing here changes.

The built-in kinds are reachable as ``Intervention.Replace(t)``, ``Intervention.Add(t)``,
``Intervention.Knockout(mask)``, ``Intervention.Scale(f)``, ``Intervention.Apply(fn)`` and
the value ``Intervention.Zero``. Payloads are checked against the activation they meet; a
mismatch raises :class:`~torch_mi.errors.InterventionError` naming the hook, the expected
shape and the shape it got.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import InterventionError
from .call import ForwardCall
from .points import HookPoint

ApplyFn = Callable[[torch.Tensor, HookPoint], torch.Tensor]


class Intervention:
    """Base of every intervention kind (see the module docstring for the protocol)."""

    mutates_input: ClassVar[bool] = False

    # The built-in kinds, attached below their definitions.
    Replace: ClassVar[type[Replace]]
    Add: ClassVar[type[Add]]
    Knockout: ClassVar[type[Knockout]]
    Scale: ClassVar[type[Scale]]
    Apply: ClassVar[type[Apply]]
    Zero: ClassVar[Zero]

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")


def _broadcasts_to(payload: torch.Size, target: torch.Size) -> bool:
    """True iff ``payload`` broadcasts to exactly ``target`` (no growth of the target)."""
    if len(payload) > len(target):
        return False
    return all(p in (t, 1) for p, t in zip(reversed(payload), reversed(target), strict=False))


def _require_tensor(kind: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InterventionError(
            f"Intervention.{kind} needs a torch.Tensor, got {type(value).__name__}"
        )
    return value


def fit_payload(kind: str, payload: torch.Tensor, tensor: torch.Tensor,
                point: HookPoint) -> torch.Tensor:
    """``payload`` checked to broadcast to ``tensor`` and moved to its device and dtype."""
    if not _broadcasts_to(payload.shape, tensor.shape):
        raise InterventionError(
            f"Intervention.{kind} at {point}: payload of shape {list(payload.shape)} does "
            f"not fit the activation of shape {list(tensor.shape)}; give a tensor of that "
            f"shape or one that broadcasts to it"
        )
    if payload.device != tensor.device or payload.dtype != tensor.dtype:
        payload = payload.to(device=tensor.device, dtype=tensor.dtype)
    return payload


@dataclass(frozen=True, eq=False)
class _TensorPayload(Intervention):
    """A kind carrying one tensor (checked at construction to be a tensor)."""

    tensor: torch.Tensor

    def __post_init__(self) -> None:
        _require_tensor(type(self).__name__, self.tensor)

    def __repr__(self) -> str:
        return f"Intervention.{type(self).__name__}(tensor{list(self.tensor.shape)})"


@dataclass(frozen=True, eq=False, repr=False)
class Replace(_TensorPayload):
    """Replace the activation by ``tensor`` (broadcast to its shape; cast to its dtype)."""

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        payload = fit_payload("Replace", self.tensor, tensor, point)
        return payload if payload.shape == tensor.shape else payload.expand(tensor.shape)


@dataclass(frozen=True, eq=False, repr=False)
class Add(_TensorPayload):
    """Add ``tensor`` (broadcast; cast to the activation's dtype), e.g. a steering vector."""

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        return tensor + fit_payload("Add", self.tensor, tensor, point)


@dataclass(frozen=True, eq=False, repr=False)
class Knockout(_TensorPayload):
    """Add an additive mask (0 keep / -inf drop) to pre-softmax scores [B,H,Sq,Sk]."""

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        if point.variant != "AttnScores":
            raise InterventionError(
                f"Intervention.Knockout at {point}: knockout masks act on pre-softmax scores; "
                f"use blocks.{point.layer}.attn.hook_scores (HookPoint.AttnScores)"
            )
        if not self.tensor.is_floating_point():
            raise InterventionError(
                f"Intervention.Knockout at {point}: the mask must be floating point "
                f"(0 keep, -inf drop), got {self.tensor.dtype}"
            )
        return tensor + fit_payload("Knockout", self.tensor, tensor, point)


@dataclass(frozen=True)
class Scale(Intervention):
    """Multiply the activation by ``factor`` (patterns are not renormalised)."""

    factor: float

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)):
            raise InterventionError(f"Intervention.Scale needs a number, got {self.factor!r}")
        object.__setattr__(self, "factor", float(self.factor))

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        return tensor * self.factor

    def __repr__(self) -> str:
        return f"Intervention.Scale({self.factor!r})"


@dataclass(frozen=True)
class Zero(Intervention):
    """Set the activation to zero."""

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        return torch.zeros_like(tensor)

    def __repr__(self) -> str:
        return "Intervention.Zero"


@dataclass(frozen=True)
class Apply(Intervention):
    """Call ``fn(tensor, hook_point)`` and use its result (same shape required)."""

    fn: ApplyFn
    mutates_input: ClassVar[bool] = True  # a user function may write into its input

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InterventionError(f"Intervention.Apply needs a callable, got {self.fn!r}")

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        result: Any = self.fn(tensor, point)
        if not isinstance(result, torch.Tensor):
            raise InterventionError(
                f"Intervention.Apply at {point}: the function returned {type(result).__name__}, "
                f"expected a tensor of shape {list(tensor.shape)}"
            )
        if result.shape != tensor.shape:
            raise InterventionError(
                f"Intervention.Apply at {point}: the function returned shape {list(result.shape)}, "
                f"expected {list(tensor.shape)}"
            )
        return result

    def __repr__(self) -> str:
        return f"Intervention.Apply({self.fn!r})"


Intervention.Replace = Replace
Intervention.Add = Add
Intervention.Knockout = Knockout
Intervention.Scale = Scale
Intervention.Apply = Apply
Intervention.Zero = Zero()
