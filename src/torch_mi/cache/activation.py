"""Per-layer activation stores, filled from a forward's HookCache or by hand.

``ActivationCache`` keeps one vector per layer (typically the last token's residual), which
is what probing, steering-vector and PCA experiments collect across many prompts.
``FullActivationCache`` keeps every position of every layer, for patching or transcoder
encoders that walk the positions of one prompt. Indices are push order: with
``from_hook_cache(cache, points)``, index ``i`` holds ``points[i]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..errors import HookError, InputError
from ..hooks.cache import HookCache
from ..hooks.points import HookLike, HookPoint, as_point

PointOrLayer = HookLike | int


def resolve_points(points: Iterable[PointOrLayer], default) -> list[HookPoint]:
    """Hook points from points/strings, or from layer ints via ``default(layer)``."""
    resolved = []
    for p in points:
        if isinstance(p, int) and not isinstance(p, bool):
            resolved.append(default(p))
        else:
            resolved.append(as_point(p))
    return resolved


def layer_error(layer: int, n_layers: int) -> HookError:
    if n_layers == 0:
        return HookError(f"layer {layer} is not in the cache: the cache is empty (push a "
                         f"tensor per layer, or build it with from_hook_cache)")
    return HookError(f"layer {layer} is not in the cache; valid layers are 0..{n_layers - 1}")


def check_layer(layer: int, n_layers: int) -> int:
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers:
        raise layer_error(layer, n_layers)
    return layer


def captured_rows(cache: HookCache, points: list[HookPoint], batch_index: int,
                  ndim: int = 3) -> list[torch.Tensor]:
    """``cache[p][batch_index]`` for each point, checking rank and batch range."""
    rows = []
    for point in points:
        tensor = cache.require(point)
        if tensor.dim() != ndim:
            raise HookError(f"hook '{point}' holds shape {list(tensor.shape)}; expected a "
                            f"{ndim}-D tensor [batch, seq, dim]")
        if not -tensor.shape[0] <= batch_index < tensor.shape[0]:
            raise InputError(f"batch_index {batch_index} is out of range for hook '{point}' "
                             f"with batch size {tensor.shape[0]}")
        rows.append(tensor[batch_index])
    return rows


class ActivationCache:
    """One activation vector [D] per layer."""

    def __init__(self, activations: Sequence[torch.Tensor] = ()) -> None:
        self._layers: list[torch.Tensor] = []
        for tensor in activations:
            self.push(tensor)

    @classmethod
    def with_capacity(cls, n_layers: int) -> ActivationCache:
        """An empty cache (Python lists grow as needed; kept for upstream parity)."""
        del n_layers
        return cls()

    @classmethod
    def from_hook_cache(cls, cache: HookCache, points: Iterable[PointOrLayer],
                        batch_index: int = 0, position: int = -1) -> ActivationCache:
        """The vector at ``position`` (default: last token) of each of ``points``; an int
        in ``points`` means that layer's ``hook_resid_post``."""
        rows = captured_rows(cache, resolve_points(points, HookPoint.ResidPost), batch_index)
        seq = rows[0].shape[0] if rows else 0
        if rows and not -seq <= position < seq:
            raise HookError(f"position {position} is out of range; valid positions are "
                            f"0..{seq - 1} (or negative from the end)")
        return cls([row[position] for row in rows])

    def push(self, activation: torch.Tensor) -> None:
        """Append the next layer's vector [D]."""
        if not isinstance(activation, torch.Tensor) or activation.dim() != 1:
            shape = list(activation.shape) if isinstance(activation, torch.Tensor) else None
            raise InputError(f"ActivationCache holds one vector [D] per layer, got shape {shape}; "
                             f"for a captured [B, S, D] tensor push t[0, -1]")
        self._layers.append(activation)

    def get_layer(self, layer: int) -> torch.Tensor:
        """The vector [D] of ``layer``; HookError (with the valid range) if absent."""
        return self._layers[check_layer(layer, len(self._layers))]

    __getitem__ = get_layer

    def n_layers(self) -> int:
        return len(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def is_empty(self) -> bool:
        return not self._layers

    def activations(self) -> list[torch.Tensor]:
        return list(self._layers)

    def to_f32_lists(self) -> list[list[float]]:
        """Each layer's vector as a list of Python floats (via float32)."""
        return [t.detach().float().cpu().flatten().tolist() for t in self._layers]

    def stack(self) -> torch.Tensor:
        """All layers as one tensor [L, D]."""
        if not self._layers:
            raise layer_error(0, 0)
        return torch.stack(self._layers)

    def __repr__(self) -> str:
        dim = self._layers[0].shape[0] if self._layers else None
        return f"ActivationCache(n_layers={len(self._layers)}, dim={dim})"


class FullActivationCache:
    """Every position of every layer: one [S, D] tensor per layer (same S for all)."""

    def __init__(self, activations: Sequence[torch.Tensor] = ()) -> None:
        self._layers: list[torch.Tensor] = []
        for tensor in activations:
            self.push(tensor)

    @classmethod
    def with_capacity(cls, n_layers: int) -> FullActivationCache:
        """An empty cache (kept for upstream parity)."""
        del n_layers
        return cls()

    @classmethod
    def from_hook_cache(cls, cache: HookCache, points: Iterable[PointOrLayer],
                        batch_index: int = 0) -> FullActivationCache:
        """``cache[p][batch_index]`` [S, D] for each of ``points``; an int in ``points``
        means that layer's ``hook_resid_post``."""
        return cls(captured_rows(cache, resolve_points(points, HookPoint.ResidPost), batch_index))

    def push(self, activation: torch.Tensor) -> None:
        """Append the next layer's activations [S, D]."""
        if not isinstance(activation, torch.Tensor) or activation.dim() != 2:
            shape = list(activation.shape) if isinstance(activation, torch.Tensor) else None
            raise InputError(f"FullActivationCache holds one [S, D] tensor per layer, got shape "
                             f"{shape}; for a captured [B, S, D] tensor push t[0]")
        if self._layers and activation.shape[0] != self._layers[0].shape[0]:
            raise InputError(f"every layer needs the same sequence length: the cache has "
                             f"{self._layers[0].shape[0]} positions, got {activation.shape[0]}")
        self._layers.append(activation)

    def get_layer(self, layer: int) -> torch.Tensor:
        """Activations [S, D] of ``layer``; HookError (with the valid range) if absent."""
        return self._layers[check_layer(layer, len(self._layers))]

    __getitem__ = get_layer

    def get_position(self, layer: int, position: int) -> torch.Tensor:
        """The vector [D] at ``position`` of ``layer``; HookError if either is out of range."""
        acts = self.get_layer(layer)
        seq = acts.shape[0]
        if not isinstance(position, int) or not 0 <= position < seq:
            raise HookError(f"position {position} is out of range; valid positions are "
                            f"0..{seq - 1}")
        return acts[position]

    def n_layers(self) -> int:
        return len(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def seq_len(self) -> int:
        """Number of positions; HookError when the cache is empty."""
        if not self._layers:
            raise HookError("the cache is empty, so it has no sequence length; push a [S, D] "
                            "tensor per layer first")
        return self._layers[0].shape[0]

    def is_empty(self) -> bool:
        return not self._layers

    def activations(self) -> list[torch.Tensor]:
        return list(self._layers)

    def __repr__(self) -> str:
        shape = list(self._layers[0].shape) if self._layers else None
        return f"FullActivationCache(n_layers={len(self._layers)}, layer_shape={shape})"
