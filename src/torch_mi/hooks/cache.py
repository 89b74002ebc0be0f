"""HookCache: the result of one forward pass (the output plus every captured tensor)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from ..errors import HookError, did_you_mean
from .points import HookLike, HookPoint, as_point


class HookCache(Mapping):
    """Output logits plus captured activations, readable by HookPoint or by string.

    ``cache[point]`` and ``cache.require(point)`` raise :class:`HookError` for a point that
    was not captured (with close matches among the captured ones); ``cache.get(point)``
    returns ``None`` instead.
    """

    def __init__(self, output: torch.Tensor | None = None) -> None:
        self._output = output
        self._store: dict[HookPoint, torch.Tensor] = {}

    def output(self) -> torch.Tensor:
        """The model output: logits [batch, seq, vocab] for language models."""
        if self._output is None:
            raise HookError("this cache has no output yet (the forward pass did not finish)")
        return self._output

    def set_output(self, output: torch.Tensor) -> None:
        self._output = output

    def store(self, point: HookLike, tensor: torch.Tensor) -> None:
        """Record ``tensor`` at ``point`` (overwrites: a recurrent pass keeps the last visit)."""
        self._store[as_point(point)] = tensor

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
        return f"HookCache(output={shape}, captures={[str(p) for p in self._store]})"
