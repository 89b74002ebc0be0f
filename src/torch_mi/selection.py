"""Layer and head selections shared by knockout, steering and RWKV state specs.

``LayerSpec.All`` / ``HeadSpec.All`` are attributes; ``LayerSpec.Specific([..])``,
``LayerSpec.Range(start, end)`` (inclusive) and ``HeadSpec.Specific([..])`` are constructors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from .errors import InterventionError


@dataclass(frozen=True)
class LayerSpec:
    """Which layers an experiment touches: all, a list, or an inclusive range."""

    kind: str
    layers: tuple[int, ...] = ()
    start: int = 0
    end: int = 0

    All: ClassVar[LayerSpec]

    @classmethod
    def Specific(cls, layers: Iterable[int]) -> LayerSpec:
        return cls("Specific", tuple(int(x) for x in layers))

    @classmethod
    def Range(cls, start: int, end: int) -> LayerSpec:
        return cls("Range", start=int(start), end=int(end))

    def contains(self, layer: int) -> bool:
        if self.kind == "All":
            return True
        if self.kind == "Specific":
            return layer in self.layers
        return self.start <= layer <= self.end

    def resolve(self, n_layers: int) -> list[int]:
        """The selected layer indices for a model with ``n_layers`` layers."""
        self.validate(n_layers)
        return [i for i in range(n_layers) if self.contains(i)]

    def validate(self, n_layers: int) -> None:
        if self.kind == "Specific":
            bad = [x for x in self.layers if not 0 <= x < n_layers]
            if bad:
                raise InterventionError(
                    f"layer(s) {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})"
                )
        elif self.kind == "Range":
            if self.start > self.end:
                raise InterventionError(
                    f"layer range {self.start}..={self.end} is empty: start must be <= end"
                )
            if self.start < 0 or self.end >= n_layers:
                raise InterventionError(
                    f"layer range {self.start}..={self.end} out of range: the model has "
                    f"{n_layers} layers (0..{n_layers - 1})"
                )

    def __repr__(self) -> str:
        if self.kind == "All":
            return "LayerSpec.All"
        if self.kind == "Specific":
            return f"LayerSpec.Specific({list(self.layers)})"
        return f"LayerSpec.Range({self.start}, {self.end})"


LayerSpec.All = LayerSpec("All")


@dataclass(frozen=True)
class HeadSpec:
    """Which attention heads an experiment touches: all or a list."""

    kind: str
    heads: tuple[int, ...] = ()

    All: ClassVar[HeadSpec]

    @classmethod
    def Specific(cls, heads: Iterable[int]) -> HeadSpec:
        return cls("Specific", tuple(int(h) for h in heads))

    def contains(self, head: int) -> bool:
        return self.kind == "All" or head in self.heads

    def validate(self, n_heads: int) -> None:
        bad = [h for h in self.heads if not 0 <= h < n_heads]
        if bad:
            raise InterventionError(
                f"head(s) {bad} out of range: the model has {n_heads} heads (0..{n_heads - 1})"
            )

    def __repr__(self) -> str:
        return "HeadSpec.All" if self.kind == "All" else f"HeadSpec.Specific({list(self.heads)})"


HeadSpec.All = HeadSpec("All")


class LayerSelector:
    """Chainable layer builders shared by knockout, steering and RWKV state specs."""

    layer_spec: LayerSpec = LayerSpec.All

    def layer(self, layer: int):
        self.layer_spec = add_layers(self.layer_spec, [layer])
        return self

    def layers(self, layers: Iterable[int]):
        self.layer_spec = add_layers(self.layer_spec, layers)
        return self

    def layer_range(self, start: int, end: int):
        """Layers start..=end (inclusive)."""
        self.layer_spec = LayerSpec.Range(start, end)
        return self

    def applies_to_layer(self, layer: int) -> bool:
        return self.layer_spec.contains(layer)


def add_layers(current: LayerSpec, new: Iterable[int]) -> LayerSpec:
    """Union of a Specific selection with more layers (All/Range become Specific)."""
    existing = list(current.layers) if current.kind == "Specific" else []
    for layer in new:
        if layer not in existing:
            existing.append(int(layer))
    return LayerSpec.Specific(existing)
