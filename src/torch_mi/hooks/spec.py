"""HookSpec: a declarative, per-call description of what to capture and what to change.

The model holds no hook state: pass a HookSpec to ``forward`` and get a HookCache back.
At each hook point the tensor is captured first (so the cache holds the pre-intervention
value), then the interventions registered at that point run in registration order.
"""

from __future__ import annotations

from collections.abc import Iterator

from .interventions import Intervention
from .points import HookLike, HookPoint, as_point
from .state import StateKnockoutSpec, StateSteeringSpec


class HookSpec:
    """Captures + ordered interventions + optional RWKV state specs (chainable builders).

    Args:
        keep_grad: keep the autograd graph on captured tensors (default: captures are
            detached, so a cache never pins a graph in memory).
    """

    def __init__(self, *, keep_grad: bool = False) -> None:
        self._captures: dict[HookPoint, None] = {}
        self._interventions: list[tuple[HookPoint, Intervention]] = []
        self.state_knockout: StateKnockoutSpec | None = None
        self.state_steering: StateSteeringSpec | None = None
        self.keep_grad = keep_grad

    # ---- builders -------------------------------------------------------------------------
    def capture(self, *points: HookLike) -> HookSpec:
        """Record the tensor at each point (strings or HookPoints)."""
        for point in points:
            self._captures[as_point(point)] = None
        return self

    def intervene(self, point: HookLike, intervention: Intervention) -> HookSpec:
        """Append an intervention at ``point``; several at one point run in this order."""
        if not isinstance(intervention, Intervention):
            from ..errors import InterventionError

            raise InterventionError(
                f"intervene({point!s}, ...) needs an Intervention, got {type(intervention).__name__}"
            )
        self._interventions.append((as_point(point), intervention))
        return self

    def extend(self, other: HookSpec) -> HookSpec:
        """Add another spec's captures and interventions (after ours); adopt its state specs
        where this spec has none."""
        for point in other._captures:
            self._captures[point] = None
        self._interventions.extend(other._interventions)
        if self.state_knockout is None:
            self.state_knockout = other.state_knockout
        if self.state_steering is None:
            self.state_steering = other.state_steering
        self.keep_grad = self.keep_grad or other.keep_grad
        return self

    def set_state_knockout(self, spec: StateKnockoutSpec) -> HookSpec:
        self.state_knockout = spec
        return self

    def set_state_steering(self, spec: StateSteeringSpec) -> HookSpec:
        self.state_steering = spec
        return self

    # ---- queries --------------------------------------------------------------------------
    def is_empty(self) -> bool:
        return not (
            self._captures
            or self._interventions
            or self.state_knockout is not None
            or self.state_steering is not None
        )

    def num_captures(self) -> int:
        return len(self._captures)

    def num_interventions(self) -> int:
        return len(self._interventions)

    def is_captured(self, point: HookLike) -> bool:
        return as_point(point) in self._captures

    def has_intervention_at(self, point: HookLike) -> bool:
        target = as_point(point)
        return any(p == target for p, _ in self._interventions)

    def interventions_at(self, point: HookLike) -> list[Intervention]:
        target = as_point(point)
        return [iv for p, iv in self._interventions if p == target]

    def captures(self) -> list[HookPoint]:
        return list(self._captures)

    def interventions(self) -> list[tuple[HookPoint, Intervention]]:
        return list(self._interventions)

    def points(self) -> Iterator[HookPoint]:
        """Every point this spec touches (captures first), without duplicates."""
        seen: dict[HookPoint, None] = dict(self._captures)
        for point, _ in self._interventions:
            seen.setdefault(point, None)
        return iter(seen)

    def __repr__(self) -> str:
        parts = [f"captures={[str(p) for p in self._captures]}"]
        if self._interventions:
            parts.append(f"interventions={[(str(p), iv) for p, iv in self._interventions]}")
        if self.state_knockout is not None:
            parts.append(f"state_knockout={self.state_knockout!r}")
        if self.state_steering is not None:
            parts.append(f"state_steering={self.state_steering!r}")
        return "HookSpec(" + ", ".join(parts) + ")"
