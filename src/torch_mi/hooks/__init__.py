"""Hook points, specs, interventions and caches (see ``points`` and ``table``)."""

from .cache import HookCache
from .call import ForwardCall
from .interventions import Add, Apply, Intervention, Knockout, Replace, Scale, Zero
from .points import HookPoint, PointKind, as_point, declare_final_kind, declare_point_kind
from .runtime import NO_HOOKS, HookRuntime, make_runtime, validate_spec
from .spec import HookSpec
from .state import StateKnockoutSpec, StateSteeringSpec
from .table import PointRow, PointTable

__all__ = [
    "NO_HOOKS",
    "Add",
    "Apply",
    "ForwardCall",
    "HookCache",
    "HookPoint",
    "HookRuntime",
    "HookSpec",
    "Intervention",
    "Knockout",
    "PointKind",
    "PointRow",
    "PointTable",
    "Replace",
    "Scale",
    "StateKnockoutSpec",
    "StateSteeringSpec",
    "Zero",
    "as_point",
    "declare_final_kind",
    "declare_point_kind",
    "make_runtime",
    "validate_spec",
]
