"""Hook points, specs, interventions and caches (see ``points`` for the catalogue)."""

from .cache import HookCache
from .interventions import Intervention
from .points import HookPoint, as_point
from .runtime import NO_HOOKS, HookRuntime, make_runtime, validate_spec
from .spec import HookSpec
from .state import StateKnockoutSpec, StateSteeringSpec

__all__ = [
    "NO_HOOKS",
    "HookCache",
    "HookPoint",
    "HookRuntime",
    "HookSpec",
    "Intervention",
    "StateKnockoutSpec",
    "StateSteeringSpec",
    "as_point",
    "make_runtime",
    "validate_spec",
]
