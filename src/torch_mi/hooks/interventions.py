"""Interventions: what to do to the tensor at a hook point.

Variants with data are constructors (``Intervention.Replace(t)``, ``Intervention.Add(t)``,
``Intervention.Knockout(mask)``, ``Intervention.Scale(f)``, ``Intervention.Apply(fn)``);
``Intervention.Zero`` is an attribute. Every payload is checked against the activation it
meets, and a mismatch raises :class:`~torch_mi.errors.InterventionError` naming the hook,
the expected shape and the shape it got.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from ..errors import InterventionError
from .points import HookPoint

ApplyFn = Callable[[torch.Tensor, HookPoint], torch.Tensor]


def _broadcasts_to(payload: torch.Size, target: torch.Size) -> bool:
    """True iff ``payload`` broadcasts to exactly ``target`` (no growth of the target)."""
    if len(payload) > len(target):
        return False
    return all(p in (t, 1) for p, t in zip(reversed(payload), reversed(target), strict=False))


class Intervention:
    """One change applied to the activation at a hook point (immutable)."""

    __slots__ = ("kind", "payload")

    Zero: ClassVar[Intervention]

    def __init__(self, kind: str, payload: object = None):
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "payload", payload)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Intervention is immutable")

    @classmethod
    def Replace(cls, tensor: torch.Tensor) -> Intervention:
        """Replace the activation by ``tensor`` (broadcast to its shape; cast to its dtype)."""
        return cls("Replace", _require_tensor("Replace", tensor))

    @classmethod
    def Add(cls, tensor: torch.Tensor) -> Intervention:
        """Add ``tensor`` (broadcast; cast to the activation's dtype), e.g. a steering vector."""
        return cls("Add", _require_tensor("Add", tensor))

    @classmethod
    def Knockout(cls, mask: torch.Tensor) -> Intervention:
        """Add an additive mask (0 keep / -inf drop) to pre-softmax scores [B,H,Sq,Sk]."""
        return cls("Knockout", _require_tensor("Knockout", mask))

    @classmethod
    def Scale(cls, factor: float) -> Intervention:
        """Multiply the activation by ``factor`` (patterns are not renormalised)."""
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise InterventionError(f"Intervention.Scale needs a number, got {factor!r}")
        return cls("Scale", float(factor))

    @classmethod
    def Apply(cls, fn: ApplyFn) -> Intervention:
        """Call ``fn(tensor, hook_point)`` and use its result (same shape required)."""
        if not callable(fn):
            raise InterventionError(f"Intervention.Apply needs a callable, got {fn!r}")
        return cls("Apply", fn)

    def __repr__(self) -> str:
        if self.kind == "Zero":
            return "Intervention.Zero"
        if isinstance(self.payload, torch.Tensor):
            return f"Intervention.{self.kind}(tensor{list(self.payload.shape)})"
        return f"Intervention.{self.kind}({self.payload!r})"

    # ---- application ----------------------------------------------------------------------
    def apply(self, tensor: torch.Tensor, point: HookPoint) -> torch.Tensor:
        """Return the intervened tensor; never modifies ``tensor`` in place."""
        kind = self.kind
        if kind == "Zero":
            return torch.zeros_like(tensor)
        if kind == "Scale":
            return tensor * self.payload
        if kind == "Apply":
            return self._apply_fn(tensor, point)
        payload = self._payload_for(tensor, point)
        if kind == "Replace":
            if payload.shape != tensor.shape:
                payload = payload.expand(tensor.shape)
            return payload
        return tensor + payload  # Add and Knockout

    def _payload_for(self, tensor: torch.Tensor, point: HookPoint) -> torch.Tensor:
        payload: torch.Tensor = self.payload  # type: ignore[assignment]
        if self.kind == "Knockout" and point.variant != "AttnScores":
            raise InterventionError(
                f"Intervention.Knockout at {point}: knockout masks act on pre-softmax scores; "
                f"use blocks.{point.layer}.attn.hook_scores (HookPoint.AttnScores)"
            )
        if not _broadcasts_to(payload.shape, tensor.shape):
            raise InterventionError(
                f"Intervention.{self.kind} at {point}: payload of shape {list(payload.shape)} does "
                f"not fit the activation of shape {list(tensor.shape)}; give a tensor of that "
                f"shape or one that broadcasts to it"
            )
        if payload.device != tensor.device or payload.dtype != tensor.dtype:
            if self.kind == "Knockout" and not payload.is_floating_point():
                raise InterventionError(
                    f"Intervention.Knockout at {point}: the mask must be floating point "
                    f"(0 keep, -inf drop), got {payload.dtype}"
                )
            payload = payload.to(device=tensor.device, dtype=tensor.dtype)
        return payload

    def _apply_fn(self, tensor: torch.Tensor, point: HookPoint) -> torch.Tensor:
        result = self.payload(tensor, point)  # type: ignore[operator]
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


Intervention.Zero = Intervention("Zero")


def _require_tensor(kind: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise InterventionError(
            f"Intervention.{kind} needs a torch.Tensor, got {type(value).__name__}"
        )
    return value
