"""Interventions: what to do to the tensor at a hook point.

An intervention kind is a small frozen dataclass that subclasses :class:`Intervention` and
implements ``apply(tensor, point, call) -> tensor``, where ``call`` is the per-forward
:class:`~torch_mi.hooks.call.ForwardCall` (the cache being filled and scratch space that
lives for one forward). ``apply`` must not modify ``tensor`` in place unless the kind sets
``mutates_input = True`` (then a capture at the same point is protected by a copy). A kind
may also provide extra points of its own (``provided_points``; fired by ``call.fire``). A new
kind (a dictionary splice, a transcoder write, a gradient tap) is a new class in its own
module; nothing here changes.

The built-in kinds are reachable as ``Intervention.Replace(t)``, ``Intervention.Add(t)``,
``Intervention.Knockout(mask)``, ``Intervention.Scale(f)``, ``Intervention.Apply(fn)`` and
the value ``Intervention.Zero``. Payloads are checked against the activation they meet; a
mismatch raises :class:`~torch_mi.errors.InterventionError` naming the hook, the expected
shape and the shape it got. Whatever an intervention returns is checked at its point
(:func:`check_result`): a tensor of the activation's shape, dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import InterventionError
from .call import ForwardCall
from .points import HookPoint, point_kinds, shown

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

    def provided_points(self, point: HookPoint) -> tuple[HookPoint | str, ...]:
        """Extra hook points this intervention provides when registered at ``point`` (its
        internals, e.g. a dictionary splice's ``f"{point}.hook_sae_acts_post"``): a spec
        may capture or intervene there, and ``apply`` fires them with ``call.fire``."""
        return ()


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
                point: HookPoint, neg_inf_ok: bool | None = None) -> torch.Tensor:
    """``payload`` checked to broadcast to ``tensor``, moved to its device and dtype, and
    checked to hold no NaN or inf after that cast (``-inf`` is allowed where ``neg_inf_ok``;
    by default at kinds that hold -inf by design, the attention scores)."""
    if not _broadcasts_to(payload.shape, tensor.shape):
        raise InterventionError(
            f"Intervention.{kind} at {point}: payload of shape {list(payload.shape)} does "
            f"not fit the activation of shape {list(tensor.shape)}; give a tensor of that "
            f"shape or one that broadcasts to it"
        )
    if payload.is_complex() and not tensor.is_complex():
        raise InterventionError(f"Intervention.{kind} at {point}: the payload is complex "
                                f"({payload.dtype}); the activation is real ({tensor.dtype})")
    if payload.device != tensor.device or payload.dtype != tensor.dtype:
        payload = payload.to(device=tensor.device, dtype=tensor.dtype)
    if neg_inf_ok is None:
        known = point_kinds().get(point.variant)
        neg_inf_ok = known is not None and known.neg_inf_ok
    _require_finite_payload(f"Intervention.{kind} at {point}", payload, neg_inf_ok)
    return payload


def _require_finite_payload(label: str, payload: torch.Tensor, neg_inf_ok: bool) -> None:
    if not payload.is_floating_point():
        return
    bad = torch.isnan(payload) | torch.isposinf(payload)
    if not neg_inf_ok:
        bad = bad | torch.isneginf(payload)
    if not bool(bad.any()):
        return
    first = bad.nonzero()[0].tolist()
    allowed = "finite values and -inf" if neg_inf_ok else "finite values"
    raise InterventionError(
        f"{label}: the payload holds {int(bad.sum())} NaN/inf "
        f"value(s) in {payload.dtype} (first at index {first}, value "
        f"{float(payload[tuple(first)])}); it may hold only {allowed}. A large finite value "
        f"can overflow to inf when cast to the activation's dtype")


def check_result(intervention: Intervention, point: HookPoint, before: torch.Tensor,
                 result: object) -> torch.Tensor:
    """``result`` if it is a tensor of ``before``'s shape, dtype and device; otherwise an
    InterventionError at this point (not a matmul error layers later)."""
    if result is before or (isinstance(result, torch.Tensor) and result.shape == before.shape
                            and result.dtype == before.dtype and result.device == before.device):
        return result
    name = shown(intervention)  # only for a message: a repr may format tensors (slow)
    if not isinstance(result, torch.Tensor):
        raise InterventionError(
            f"{name} at {point}: returned {type(result).__name__}, expected a tensor of shape "
            f"{list(before.shape)}, dtype {before.dtype}, device {before.device}")
    if result.shape != before.shape:
        raise InterventionError(
            f"{name} at {point}: returned shape {list(result.shape)}, expected "
            f"{list(before.shape)} (the activation's shape)")
    if result.dtype != before.dtype:
        raise InterventionError(
            f"{name} at {point}: returned dtype {result.dtype}, expected {before.dtype} (the "
            f"activation's dtype); return result.to(tensor.dtype)")
    if result.device != before.device:
        raise InterventionError(
            f"{name} at {point}: returned a tensor on {result.device}, expected "
            f"{before.device} (the activation's device); return result.to(tensor.device)")
    return result


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
    """Add an additive mask (0 keep / -inf drop) to pre-softmax scores [B,H,Sq,Sk].

    The mask may hold finite values and -inf only: +inf or NaN would turn whole pattern
    rows into NaN (checked when built and again after the cast to the scores' dtype)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tensor.is_floating_point():
            raise InterventionError(
                f"Intervention.Knockout: the mask must be floating point (0 keep, -inf drop), "
                f"got {self.tensor.dtype}")
        _require_finite_payload("Intervention.Knockout", self.tensor, True)

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        if point.variant != "AttnScores":
            raise InterventionError(
                f"Intervention.Knockout at {point}: knockout masks act on pre-softmax scores; "
                f"use blocks.{point.layer}.attn.hook_scores (HookPoint.AttnScores)"
            )
        return tensor + fit_payload("Knockout", self.tensor, tensor, point, neg_inf_ok=True)


@dataclass(frozen=True)
class Scale(Intervention):
    """Multiply the activation by ``factor`` (patterns are not renormalised)."""

    factor: float

    def __post_init__(self) -> None:
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, float)):
            raise InterventionError(f"Intervention.Scale needs a number, got {shown(self.factor)}")
        try:
            factor = float(self.factor)
        except OverflowError:
            factor = math.inf
        if not math.isfinite(factor):
            raise InterventionError(f"Intervention.Scale needs a finite factor, got "
                                    f"{shown(self.factor)}; use Intervention.Zero for zero")
        object.__setattr__(self, "factor", factor)

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
    """Call ``fn(tensor, hook_point)`` and use its result (same shape, dtype and device
    required; checked by the runtime at this point)."""

    fn: ApplyFn
    mutates_input: ClassVar[bool] = True  # a user function may write into its input

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise InterventionError(f"Intervention.Apply needs a callable, got {self.fn!r}")

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        result: Any = self.fn(tensor, point)
        return check_result(self, point, tensor, result)

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or type(self.fn).__name__
        return f"Intervention.Apply({name})"


Intervention.Replace = Replace
Intervention.Add = Add
Intervention.Knockout = Knockout
Intervention.Scale = Scale
Intervention.Apply = Apply
Intervention.Zero = Zero()
