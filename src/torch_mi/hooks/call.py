"""ForwardCall: what one forward shares with the interventions that run inside it."""

from __future__ import annotations

from typing import Any

from .cache import HookCache


class ForwardCall:
    """What one forward shares with its interventions: the cache being filled, whether
    gradients are kept, and ``scratch`` space that lives exactly as long as the call."""

    __slots__ = ("backend_specs", "cache", "keep_grad", "scratch")

    def __init__(self, cache: HookCache, keep_grad: bool,
                 backend_specs: dict[str, object] | None = None) -> None:
        self.cache = cache
        self.keep_grad = keep_grad
        self.backend_specs = backend_specs or {}
        self.scratch: dict[Any, Any] = {}
