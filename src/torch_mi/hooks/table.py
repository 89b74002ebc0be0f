"""A backend's hook table: which point kinds it fires, in which order, with which shapes.

A backend lists one :class:`PointRow` per kind, in firing order: model-wide rows before the
first per-layer row fire before the blocks, those after the last per-layer row fire after
them. Everything else is derived from the table: ``hook_points()`` with shapes, and the
per-layer records of points that the forward code fires (``record.resid_pre``), so a
point's name, string and shape are written in exactly one place.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .points import HookPoint, PointKind

Shape = tuple  # ints and the symbols "batch" / "seq"


@dataclass(frozen=True)
class PointRow:
    """``field`` is the attribute name in the backend's point records; ``shape(config)``
    gives the tensor's shape with symbolic ``"batch"`` and ``"seq"`` (a flattened dimension
    is written ``"batch*seq*N"``); ``when(config)`` says whether a model with that config
    has the point at all (default: always)."""

    field: str
    kind: PointKind
    shape: Callable[[Any], Shape]
    when: Callable[[Any], bool] | None = None

    def present(self, config: Any) -> bool:
        return self.when is None or bool(self.when(config))


_OWNERS: dict[str, set[str]] = {}


def backends_having(variant: str) -> frozenset[str]:
    """Names of the backends whose tables list ``variant``."""
    return frozenset(_OWNERS.get(variant, ()))


class PointTable:
    """The hook table of one backend (built once, at import)."""

    def __init__(self, backend: str, rows: Sequence[PointRow]) -> None:
        self.backend = backend
        self.rows = tuple(rows)
        layer_rows = [i for i, r in enumerate(self.rows) if r.kind.per_layer]
        first = layer_rows[0] if layer_rows else len(self.rows)
        last = layer_rows[-1] if layer_rows else len(self.rows) - 1
        self.before = tuple(r for r in self.rows[:first] if not r.kind.per_layer)
        self.per_layer = tuple(r for r in self.rows if r.kind.per_layer)
        self.after = tuple(r for r in self.rows[last + 1:] if not r.kind.per_layer)
        if len(self.before) + len(self.per_layer) + len(self.after) != len(self.rows):
            raise ValueError(f"{backend} hook table: model-wide rows must come before or after "
                             f"all per-layer rows")
        fields = [r.field for r in self.rows]
        if len(set(fields)) != len(fields):
            raise ValueError(f"{backend} hook table: duplicate field names")
        self._layer_record = namedtuple("LayerPoints", [r.field for r in self.per_layer])
        self._global_record = namedtuple("ModelPoints", [r.field for r in self.before + self.after])
        for row in self.rows:
            _OWNERS.setdefault(row.kind.variant, set()).add(backend)

    def shapes(self, config: Any, num_layers: int) -> dict[HookPoint, Shape]:
        """Every point of a model with ``num_layers`` layers, in firing order, with shapes."""
        points: dict[HookPoint, Shape] = {}
        for row in self.before:
            if row.present(config):
                points[HookPoint(row.kind.variant)] = row.shape(config)
        layer_rows = [row for row in self.per_layer if row.present(config)]
        for layer in range(num_layers):
            for row in layer_rows:
                points[HookPoint(row.kind.variant, layer)] = row.shape(config)
        for row in self.after:
            if row.present(config):
                points[HookPoint(row.kind.variant)] = row.shape(config)
        return points

    def layer_points(self, layer: int) -> tuple:
        """A record of layer ``layer``'s points, one attribute per per-layer row."""
        return self._layer_record(*(HookPoint(r.kind.variant, layer) for r in self.per_layer))

    def model_points(self) -> tuple:
        """A record of the model-wide points, one attribute per model-wide row."""
        return self._global_record(*(HookPoint(r.kind.variant) for r in self.before + self.after))
