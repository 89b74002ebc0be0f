"""NaN debugging: ``HookSpec(check_finite=True)`` stops a forward at the first hook point
whose tensor is not finite.

A NaN that enters a forward spreads to everything after it, so the logits only say that
something went wrong. Checking every fired tensor in firing order finds the first place,
and the message names it, its layer, how many values are bad, where the first one is and
which point before it was still finite. Kinds whose tensor holds ``-inf`` by design
(masked attention scores, ``PointKind.neg_inf_ok``) may hold ``-inf`` but not NaN or +inf.
The check costs one reduction per fired tensor and runs only when asked for.
"""

from __future__ import annotations

import torch

from ..errors import HookError, InterventionError
from .points import HookPoint, point_kinds, shown


def bad_values(tensor: torch.Tensor, neg_inf_ok: bool = False) -> torch.Tensor | None:
    """Boolean mask of the values that are not allowed (NaN, +inf, and -inf unless
    ``neg_inf_ok``), or None when every value is fine (integer tensors always are)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return None
    bad = torch.isnan(tensor) | torch.isposinf(tensor) if neg_inf_ok else ~torch.isfinite(tensor)
    return bad if bool(bad.any()) else None


def describe_bad(tensor: torch.Tensor, bad: torch.Tensor) -> str:
    """'3 NaN, 1 +inf, 0 -inf of 1280 values, first at index [0, 4, 17]'."""
    t = tensor.detach()
    counts = (int(torch.isnan(t).sum()), int(torch.isposinf(t).sum()),
              int(torch.isneginf(t).sum()))
    first = bad.nonzero()[0].tolist()
    return (f"{counts[0]} NaN, {counts[1]} +inf, {counts[2]} -inf of {t.numel()} values, "
            f"first at index {first}")


def _where(point: HookPoint) -> str:
    return f"layer {point.layer}" if point.layer is not None else "model-wide, outside the layers"


def _neg_inf_ok(point: HookPoint) -> bool:
    kind = point_kinds().get(point.variant)
    return kind is not None and kind.neg_inf_ok


class FiniteChecker:
    """Per-call state of the check: the last point seen finite, for the message."""

    __slots__ = ("last_finite",)

    def __init__(self) -> None:
        self.last_finite: HookPoint | None = None

    def check(self, point: HookPoint, tensor: torch.Tensor, what: str = "") -> None:
        """HookError if the tensor the model computed at ``point`` is not finite."""
        bad = bad_values(tensor, _neg_inf_ok(point))
        if bad is None:
            if not what:
                self.last_finite = point
            return
        before = (f"the previous hook point, {self.last_finite}, was finite"
                  if self.last_finite is not None else "it is the first hook point of the call")
        subject = what or "the tensor"
        raise HookError(
            f"check_finite: {subject} at {point} ({_where(point)}) is not finite: "
            f"{describe_bad(tensor, bad)}; {before}. Look at the weights and inputs of the "
            f"computation that produces {point} (model.hook_points() lists the firing order)")

    def check_intervention(self, point: HookPoint, intervention: object,
                           tensor: torch.Tensor) -> None:
        """InterventionError if an intervention at ``point`` made its tensor non-finite."""
        bad = bad_values(tensor, _neg_inf_ok(point))
        if bad is None:
            return
        raise InterventionError(
            f"check_finite: {shown(intervention)} at {point} ({_where(point)}) produced non-finite "
            f"values: {describe_bad(tensor, bad)}; the tensor it received was finite. Fix "
            f"the intervention's payload or function")
