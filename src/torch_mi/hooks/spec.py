"""HookSpec: a declarative, per-call description of what to capture and what to change.

The model holds no hook state: pass a HookSpec to ``forward`` and get a HookCache back.
At each hook point the tensor is captured first (so the cache holds the pre-intervention
value), then the interventions registered at that point run in registration order.

Backend-specific entries (RWKV's state knockout and steering) travel as named *backend
specs*; a backend that cannot honour one raises HookError naming it at the start of
``forward`` (nothing is silently dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..errors import HookError, InterventionError
from .interventions import Intervention
from .points import HookLike, HookPoint, as_point, shown
from .state import StateKnockoutSpec, StateSteeringSpec

STATE_KNOCKOUT = "state_knockout"
STATE_STEERING = "state_steering"


class HookSpec:
    """Captures + ordered interventions + backend specs (chainable builders).

    Args:
        keep_grad: captured tensors become part of a live autograd graph (a gradient tap,
            see :mod:`torch_mi.hooks.grad`; weights stay frozen), so after
            ``loss.backward()`` ``cache.grad(point)`` holds d loss / d activation. The
            forward then runs with grad enabled, even under ``torch.no_grad()``; under
            ``torch.inference_mode()`` it raises HookError. Default: captures are
            detached, so a cache never pins a graph in memory.
        check_finite: stop the forward with HookError at the first hook point whose
            tensor holds NaN or inf, naming the point and its layer (InterventionError if
            an intervention made it so). Costs one reduction per hook point; off by default.
    """

    def __init__(self, *, keep_grad: bool = False, check_finite: bool = False) -> None:
        for name, value in (("keep_grad", keep_grad), ("check_finite", check_finite)):
            if not isinstance(value, bool):
                raise HookError(f"HookSpec({name}=...) must be True or False, got "
                                f"{type(value).__name__} {shown(value)}")
        self._captures: dict[HookPoint, None] = {}
        self._grad_captures: dict[HookPoint, None] = {}
        self._interventions: list[tuple[HookPoint, Intervention]] = []
        self._backend_specs: dict[str, object] = {}
        self.keep_grad = keep_grad
        self.check_finite = check_finite

    # ---- builders -------------------------------------------------------------------------
    def capture(self, *points: HookLike) -> HookSpec:
        """Record the tensor at each point (strings or HookPoints); if one is invalid,
        none is added."""
        parsed = [as_point(point) for point in points]
        for point in parsed:
            self._captures[point] = None
        return self

    def capture_grad(self, *points: HookLike) -> HookSpec:
        """Store d loss / d activation at each point in the cache when the caller runs
        ``loss.backward()`` on a loss derived from this forward (TransformerLens's
        ``incl_bwd``); read it with ``cache.grad(point)``. The activation itself is not
        kept unless captured too. If one point is invalid, none is added."""
        parsed = [as_point(point) for point in points]
        for point in parsed:
            self._grad_captures[point] = None
        return self

    def intervene(self, point: HookLike, intervention: Intervention) -> HookSpec:
        """Append an intervention at ``point``; several at one point run in this order."""
        if not isinstance(intervention, Intervention):
            raise InterventionError(
                f"intervene({shown(point)}, ...) needs an Intervention (e.g. "
                f"mi.Intervention.Zero), got {type(intervention).__name__}"
            )
        self._interventions.append((as_point(point), intervention))
        return self

    def extend(self, other: HookSpec) -> HookSpec:
        """Add another spec's captures and interventions (after ours); adopt its backend
        specs where this spec has none of that name."""
        if not isinstance(other, HookSpec):
            raise HookError(f"extend() needs a HookSpec, got {type(other).__name__}")
        for point in other._captures:
            self._captures[point] = None
        for point in other._grad_captures:
            self._grad_captures[point] = None
        self._interventions.extend(other._interventions)
        for name, value in other._backend_specs.items():
            self._backend_specs.setdefault(name, value)
        self.keep_grad = self.keep_grad or other.keep_grad
        self.check_finite = self.check_finite or other.check_finite
        return self

    def set_backend_spec(self, name: str, value: object) -> HookSpec:
        """Attach a backend-specific entry; backends that do not honour ``name`` refuse it."""
        if not isinstance(name, str) or not name:
            raise HookError(f"a backend spec needs a non-empty string name, got {shown(name)}")
        self._backend_specs[name] = value
        return self

    def set_state_knockout(self, spec: StateKnockoutSpec) -> HookSpec:
        """RWKV: remove the state writes of some positions (recurrent backends only)."""
        return self.set_backend_spec(STATE_KNOCKOUT, spec)

    def set_state_steering(self, spec: StateSteeringSpec) -> HookSpec:
        """RWKV: scale the state writes of some positions (recurrent backends only)."""
        return self.set_backend_spec(STATE_STEERING, spec)

    @property
    def state_knockout(self) -> StateKnockoutSpec | None:
        return self._backend_specs.get(STATE_KNOCKOUT)  # type: ignore[return-value]

    @property
    def state_steering(self) -> StateSteeringSpec | None:
        return self._backend_specs.get(STATE_STEERING)  # type: ignore[return-value]

    def backend_specs(self) -> Mapping[str, object]:
        return dict(self._backend_specs)

    # ---- queries --------------------------------------------------------------------------
    def is_empty(self) -> bool:
        """True when the spec asks for nothing (then a forward does no hook work at all)."""
        return not (self._captures or self._grad_captures or self._interventions
                    or self._backend_specs or self.check_finite)

    @property
    def needs_grad(self) -> bool:
        """True when the forward must record an autograd graph (keep_grad or capture_grad)."""
        return self.keep_grad or bool(self._grad_captures)

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

    def grad_captures(self) -> list[HookPoint]:
        """Points whose gradients ``capture_grad`` asked for."""
        return list(self._grad_captures)

    def interventions(self) -> list[tuple[HookPoint, Intervention]]:
        return list(self._interventions)

    def points(self) -> Iterator[HookPoint]:
        """Every point this spec touches (captures first), without duplicates."""
        seen: dict[HookPoint, None] = dict(self._captures)
        for point in self._grad_captures:
            seen.setdefault(point, None)
        for point, _ in self._interventions:
            seen.setdefault(point, None)
        return iter(seen)

    def __repr__(self) -> str:
        parts = [f"captures={[str(p) for p in self._captures]}"]
        if self._grad_captures:
            parts.append(f"grad_captures={[str(p) for p in self._grad_captures]}")
        if self._interventions:
            parts.append(f"interventions={[(str(p), iv) for p, iv in self._interventions]}")
        parts.extend(f"{name}={value!r}" for name, value in self._backend_specs.items())
        return "HookSpec(" + ", ".join(parts) + ")"
