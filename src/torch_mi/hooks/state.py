"""RWKV state interventions, carried on a HookSpec.

``StateKnockoutSpec`` removes the k·vᵀ write of the listed token positions from the
recurrent state of the listed layers (decay still applies); ``StateSteeringSpec`` scales
that write by ``scale`` instead (0 = knockout, 1 = no-op). If both target a layer, the
knockout wins for that whole layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import InterventionError
from ..selection import LayerSelector, LayerSpec


class _StateSpecBase(LayerSelector):
    """Positions x layers selection shared by the two state specs (chainable builders)."""

    def __init__(self) -> None:
        self.positions_list: list[int] = []
        self.layer_spec: LayerSpec = LayerSpec.All

    def position(self, pos: int):
        """Add token position ``pos`` (an int >= 0: a float or bool is refused, never
        truncated to another position)."""
        if isinstance(pos, bool) or not isinstance(pos, int | np.integer) or pos < 0:
            raise InterventionError(f"{type(self).__name__}.position: expected a token "
                                    f"position (an int >= 0), got {pos!r}")
        if int(pos) not in self.positions_list:
            self.positions_list.append(int(pos))
        return self

    def positions(self, positions: Iterable[int]):
        for p in positions:
            self.position(p)
        return self

    def position_set(self) -> frozenset[int]:
        return frozenset(self.positions_list)

    def validate(self, n_layers: int, seq_len: int) -> None:
        if not self.positions_list:
            raise InterventionError(
                f"{type(self).__name__} has no positions: add some with .position(p)"
            )
        bad = [p for p in self.positions_list if not 0 <= p < seq_len]
        if bad:
            raise InterventionError(
                f"{type(self).__name__}: position(s) {bad} out of range for a sequence of "
                f"{seq_len} tokens"
            )
        self.layer_spec.validate(n_layers)


class StateKnockoutSpec(_StateSpecBase):
    """Knock the listed positions out of the RWKV state at the listed layers (all by default)."""

    def __repr__(self) -> str:
        return f"StateKnockoutSpec(positions={self.positions_list}, layers={self.layer_spec})"


class StateSteeringSpec(_StateSpecBase):
    """Scale the state write of the listed positions by ``scale`` (must be >= 0)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        if scale < 0:
            raise InterventionError(f"StateSteeringSpec scale must be >= 0, got {scale}")
        self.scale = float(scale)

    def __repr__(self) -> str:
        return (
            f"StateSteeringSpec(scale={self.scale}, positions={self.positions_list}, "
            f"layers={self.layer_spec})"
        )
