"""AttentionCache: per-layer attention patterns and head-averaged read-outs.

The read-outs answer "where does position i look?" (a query row) and "who looks at
position j?" (a key column), averaged over heads of batch item 0 and computed in float32,
which is what attention-routing and knockout experiments report.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import HookError, InputError
from ..hooks.cache import HookCache
from ..hooks.points import HookPoint
from .activation import LayerStore, PointOrLayer, resolve_points


class AttentionCache(LayerStore):
    """One attention pattern [B, H, Sq, Sk] per layer (index = push order)."""

    ndim, layout = 4, "[batch, heads, seq_q, seq_k]"

    @classmethod
    def from_hook_cache(cls, cache: HookCache, points: Iterable[PointOrLayer]) -> AttentionCache:
        """The captured patterns of ``points``; an int means that layer's
        ``attn.hook_pattern``."""
        return cls([cache.require(p) for p in resolve_points(points, HookPoint.AttnPattern)])

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
