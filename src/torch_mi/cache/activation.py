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


class LayerStore:
    """One tensor per layer, indexed by push order: what the caches share."""

    ndim: int = 1
    layout: str = "[D]"
    hint: str = ""

    def __init__(self, tensors: Sequence[torch.Tensor] = ()) -> None:
        self._layers: list[torch.Tensor] = []
        for tensor in tensors:
            self.push(tensor)

    @classmethod
    def with_capacity(cls, n_layers: int):
        """An empty cache; ``n_layers`` is accepted and ignored (the list grows as needed)."""
        del n_layers
        return cls()

    def check(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != self.ndim:
            shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else None
            raise InputError(f"{type(self).__name__} holds one {self.layout} tensor per layer, "
                             f"got shape {shape}{self.hint}")

    def push(self, tensor: torch.Tensor) -> None:
        """Append the next layer's tensor."""
        self.check(tensor)
        self._layers.append(tensor)

    def get_layer(self, layer: int) -> torch.Tensor:
        """The tensor of ``layer``; HookError (with the valid range) if absent."""
        return self._layers[check_layer(layer, len(self._layers))]

    __getitem__ = get_layer

    def n_layers(self) -> int:
        return len(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def is_empty(self) -> bool:
        return not self._layers


class ActivationCache(LayerStore):
    """One activation vector [D] per layer."""

    ndim, layout, hint = 1, "[D]", "; for a captured [B, S, D] tensor push t[0, -1]"

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


class FullActivationCache(LayerStore):
    """Every position of every layer: one [S, D] tensor per layer (same S for all)."""

    ndim, layout, hint = 2, "[S, D]", "; for a captured [B, S, D] tensor push t[0]"

    @classmethod
    def from_hook_cache(cls, cache: HookCache, points: Iterable[PointOrLayer],
                        batch_index: int = 0) -> FullActivationCache:
        """``cache[p][batch_index]`` [S, D] for each of ``points``; an int in ``points``
        means that layer's ``hook_resid_post``."""
        return cls(captured_rows(cache, resolve_points(points, HookPoint.ResidPost), batch_index))

    def check(self, tensor: torch.Tensor) -> None:
        super().check(tensor)
        if self._layers and tensor.shape[0] != self._layers[0].shape[0]:
            raise InputError(f"every layer needs the same sequence length: the cache has "
                             f"{self._layers[0].shape[0]} positions, got {tensor.shape[0]}")

    def get_position(self, layer: int, position: int) -> torch.Tensor:
        """The vector [D] at ``position`` of ``layer``; HookError if either is out of range."""
        acts = self.get_layer(layer)
        seq = acts.shape[0]
        if not isinstance(position, int) or not 0 <= position < seq:
            raise HookError(f"position {position} is out of range; valid positions are "
                            f"0..{seq - 1}")
        return acts[position]

    def seq_len(self) -> int:
        """Number of positions; HookError when the cache is empty."""
        if not self._layers:
            raise HookError("the cache is empty, so it has no sequence length; push a [S, D] "
                            "tensor per layer first")
        return self._layers[0].shape[0]

    def activations(self) -> list[torch.Tensor]:
        return list(self._layers)

    def __repr__(self) -> str:
        shape = list(self._layers[0].shape) if self._layers else None
        return f"FullActivationCache(n_layers={len(self._layers)}, layer_shape={shape})"
