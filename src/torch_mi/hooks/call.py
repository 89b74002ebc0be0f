"""ForwardCall: what one forward shares with the interventions that run inside it."""

from __future__ import annotations

import weakref
from typing import Any, Protocol

import torch

from .cache import HookCache
from .points import HookPoint


class Dispatcher(Protocol):
    """What a call needs of its runtime (HookRuntime; named here to keep imports one-way)."""

    def is_active(self, point: HookPoint) -> bool: ...

    def fire(self, point: HookPoint, tensor: torch.Tensor) -> torch.Tensor: ...


class ForwardCall:
    """What one forward shares with its interventions: the cache being filled, whether
    gradients are kept, ``scratch`` space that lives exactly as long as the call, and
    :meth:`fire` for the extra points an intervention provides (its internals)."""

    __slots__ = ("_runtime", "backend_specs", "cache", "keep_grad", "scratch")

    def __init__(self, cache: HookCache, keep_grad: bool,
                 backend_specs: dict[str, object] | None = None,
                 runtime: Dispatcher | None = None) -> None:
        self.cache = cache
        self.keep_grad = keep_grad
        self.backend_specs = backend_specs or {}
        self.scratch: dict[Any, Any] = {}
        # A weak reference: the runtime owns the call, so a strong one would be a cycle
        # that keeps the call's tensors alive until the garbage collector runs.
        self._runtime = None if runtime is None else weakref.ref(runtime)

    def _live(self) -> Dispatcher | None:
        return None if self._runtime is None else self._runtime()

    def is_active(self, point: HookPoint) -> bool:
        """True if this call captures or intervenes at ``point`` (lets an intervention skip
        computing an internal nobody reads)."""
        runtime = self._live()
        return runtime is not None and runtime.is_active(point)

    def fire(self, point: HookPoint, tensor: torch.Tensor) -> torch.Tensor:
        """Run the spec's captures and interventions at a point an intervention provides
        (see ``Intervention.provided_points``) and return the tensor to go on with."""
        runtime = self._live()
        return tensor if runtime is None else runtime.fire(point, tensor)
