"""AttentionCache: per-layer attention patterns and head-averaged read-outs.

The read-outs answer "where does position i look?" (a query row) and "who looks at
position j?" (a key column), averaged over heads of batch item 0 and computed in float32,
which is what attention-routing and knockout experiments report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..errors import HookError, InputError
from ..hooks.cache import HookCache
from ..hooks.points import HookPoint
from .activation import PointOrLayer, check_layer, resolve_points


class AttentionCache:
    """One attention pattern [B, H, Sq, Sk] per layer (index = push order)."""

    def __init__(self, patterns: Sequence[torch.Tensor] = ()) -> None:
        self._layers: list[torch.Tensor] = []
        for pattern in patterns:
            self.push(pattern)

    @classmethod
    def with_capacity(cls, n_layers: int) -> AttentionCache:
        """An empty cache (kept for upstream parity)."""
        del n_layers
        return cls()

    @classmethod
    def from_hook_cache(cls, cache: HookCache, points: Iterable[PointOrLayer]) -> AttentionCache:
        """The captured patterns of ``points``; an int means that layer's
        ``attn.hook_pattern``."""
        return cls([cache.require(p) for p in resolve_points(points, HookPoint.AttnPattern)])

    def push(self, pattern: torch.Tensor) -> None:
        """Append the next layer's pattern [B, H, Sq, Sk]."""
        if not isinstance(pattern, torch.Tensor) or pattern.dim() != 4:
            shape = list(pattern.shape) if isinstance(pattern, torch.Tensor) else None
            raise InputError(f"AttentionCache holds one [batch, heads, seq_q, seq_k] pattern per "
                             f"layer, got shape {shape}")
        self._layers.append(pattern)

    def get_layer(self, layer: int) -> torch.Tensor:
        """Pattern [B, H, Sq, Sk] of ``layer``; HookError (with the valid range) if absent."""
        return self._layers[check_layer(layer, len(self._layers))]

    __getitem__ = get_layer

    def n_layers(self) -> int:
        return len(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def is_empty(self) -> bool:
        return not self._layers

    def patterns(self) -> list[torch.Tensor]:
        return list(self._layers)

    def head_mean(self, layer: int) -> torch.Tensor:
        """Batch item 0 averaged over heads, float32: [Sq, Sk]."""
        return self.get_layer(layer)[0].float().mean(dim=0)

    def attention_from_position(self, layer: int, position: int) -> torch.Tensor:
        """How query ``position`` spreads its attention over the keys: [Sk] float32."""
        mean = self.head_mean(layer)  # [Sq, Sk]
        return mean[_check_position(position, mean.shape[0], "query")]

    def attention_to_position(self, layer: int, position: int) -> torch.Tensor:
        """How much each query attends to key ``position``: [Sq] float32."""
        mean = self.head_mean(layer)  # [Sq, Sk]
        return mean[:, _check_position(position, mean.shape[1], "key")]

    def top_attended_positions(self, layer: int, from_position: int,
                               k: int) -> list[tuple[int, float]]:
        """The ``k`` keys that query ``from_position`` attends to most, as
        ``(key_position, weight)`` sorted by weight (earlier position first on ties);
        ``k`` larger than the sequence returns every key."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InputError(f"k must be a non-negative integer, got {k!r}")
        row = self.attention_from_position(layer, from_position)  # [Sk]
        weights, order = torch.sort(row, descending=True, stable=True)
        return [(int(p), float(w)) for p, w in zip(order[:k].tolist(), weights[:k].tolist(),
                                                   strict=True)]

    def __repr__(self) -> str:
        shape = list(self._layers[0].shape) if self._layers else None
        return f"AttentionCache(n_layers={len(self._layers)}, layer_shape={shape})"


def _check_position(position: int, size: int, axis: str) -> int:
    if not isinstance(position, int) or isinstance(position, bool) or not 0 <= position < size:
        raise HookError(f"{axis} position {position} is out of range; valid positions are "
                        f"0..{size - 1}")
    return position
