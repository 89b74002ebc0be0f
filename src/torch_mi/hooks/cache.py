"""HookCache: the result of one forward pass (the output plus every captured tensor), and
after ``loss.backward()`` the gradients at the points that asked for them."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping

import torch

from ..errors import HookError, did_you_mean
from .points import HookLike, HookPoint, as_point


class HookCache(Mapping):
    """Output logits plus captured activations, readable by HookPoint or by string.

    ``cache[point]`` and ``cache.require(point)`` raise :class:`HookError` for a point that
    was not captured (with close matches among the captured ones); ``cache.get(point)``
    returns ``None`` instead. ``cache.grad(point)`` is d loss / d activation after
    ``loss.backward()`` (points captured with ``keep_grad=True`` or ``capture_grad``).
    """

    def __init__(self, output: torch.Tensor | None = None) -> None:
        self._output = output
        self._store: dict[HookPoint, torch.Tensor] = {}
        # Gradients: points watched -> (shape, dtype, device) of their activation;
        # capture_grad's stored gradients; whether any backward reached this forward.
        self._watched: dict[HookPoint, tuple[torch.Size, torch.dtype, torch.device]] = {}
        self._grads: dict[HookPoint, torch.Tensor] = {}
        self._backward_seen = False

    def output(self) -> torch.Tensor:
        """The model output: logits [batch, seq, vocab] for language models."""
        if self._output is None:
            raise HookError("this cache has no output yet (the forward pass did not finish)")
        return self._output

    def set_output(self, output: torch.Tensor) -> None:
        self._output = output
        if self._watched and output.requires_grad:  # a backward from the logits counts
            output.register_hook(_GradHook(weakref.ref(self), None, False))

    def store(self, point: HookLike, tensor: torch.Tensor) -> None:
        """Record ``tensor`` at ``point`` (overwrites: a recurrent pass keeps the last visit)."""
        self._store[as_point(point)] = tensor

    def watch_grad(self, point: HookPoint, tensor: torch.Tensor, *, store: bool) -> None:
        """Follow the gradient of ``tensor`` (which requires grad) at ``point``: stored here
        when ``store`` (capture_grad), else left in ``tensor.grad`` (keep_grad captures)."""
        self._watched[point] = (tensor.shape, tensor.dtype, tensor.device)
        if not store:
            tensor.retain_grad()
        # A weak reference: the graph must not keep the cache (and its tensors) alive.
        tensor.register_hook(_GradHook(weakref.ref(self), point, store))

    def _on_grad(self, point: HookPoint | None, grad: torch.Tensor, store: bool) -> None:
        self._backward_seen = True
        if store:
            known = self._grads.get(point)
            self._grads[point] = grad.detach() if known is None else known + grad.detach()

    def grad(self, point: HookLike) -> torch.Tensor:
        """d loss / d activation at ``point`` (its shape), summed over backward calls.

        HookError when the point was not captured with ``HookSpec(keep_grad=True)`` or
        ``capture_grad``, or when no backward has reached this forward yet. A point the
        loss does not depend on (e.g. upstream of a ``Replace``) has a zero gradient.
        """
        key = as_point(point)
        meta = self._watched.get(key)
        if meta is None:
            how = (f"HookSpec(keep_grad=True).capture({str(key)!r}) or "
                   f"HookSpec().capture_grad({str(key)!r})")
            if key in self._store:
                raise HookError(f"hook point '{key}' was captured without gradients; capture "
                                f"it with {how}")
            raise HookError(f"hook point '{key}' has no gradient: it was not captured; use "
                            f"{how}." + did_you_mean(str(key), (str(p) for p in self._watched)))
        if not self._backward_seen:
            raise HookError(f"no gradient at '{key}' yet: call loss.backward() on a loss "
                            f"computed from this forward's output or captures first")
        stored = self._grads.get(key)
        if stored is None and key in self._store:
            stored = self._store[key].grad
        if stored is None:  # backward ran but never reached this point: d loss / d x = 0
            shape, dtype, device = meta
            return torch.zeros(shape, dtype=dtype, device=device)
        return stored

    def grad_points(self) -> list[HookPoint]:
        """The points whose gradients this cache follows."""
        return list(self._watched)

    def get(self, point: HookLike, default: torch.Tensor | None = None) -> torch.Tensor | None:
        return self._store.get(as_point(point), default)

    def require(self, point: HookLike) -> torch.Tensor:
        """The captured tensor at ``point``; HookError if it was not captured."""
        key = as_point(point)
        try:
            return self._store[key]
        except KeyError:
            hint = did_you_mean(str(key), (str(p) for p in self._store))
            raise HookError(
                f"hook point '{key}' was not captured; add it with HookSpec().capture({str(key)!r})."
                + hint
            ) from None

    def __getitem__(self, point: HookLike) -> torch.Tensor:
        return self.require(point)

    def __contains__(self, point: object) -> bool:
        if not isinstance(point, (HookPoint, str)):
            return False
        try:
            return as_point(point) in self._store
        except HookError:  # "" names no point: not contained, never an exception
            return False

    def __iter__(self) -> Iterator[HookPoint]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def num_captures(self) -> int:
        """Number of captured tensors (the output is not counted)."""
        return len(self._store)

    def __repr__(self) -> str:
        shape = None if self._output is None else list(self._output.shape)
        grads = f", grads={[str(p) for p in self._watched]}" if self._watched else ""
        return f"HookCache(output={shape}, captures={[str(p) for p in self._store]}{grads})"


class _GradHook:
    """Tensor hook recording that backward reached ``point`` (and its gradient if asked)."""

    __slots__ = ("cache", "point", "store")

    def __init__(self, cache: weakref.ref, point: HookPoint | None, store: bool) -> None:
        self.cache, self.point, self.store = cache, point, store

    def __call__(self, grad: torch.Tensor) -> None:
        cache = self.cache()
        if cache is not None:
            cache._on_grad(self.point, grad, self.store)
