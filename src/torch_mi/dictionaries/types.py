"""Shared value types of the sparse-dictionary layer: feature ids and sparse activations.

Both SAEs and transcoders speak in these types, so results from one can be ranked, merged
and printed next to results from the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from torch_mi.errors import InterventionError


@dataclass(frozen=True, order=True)
class SaeFeatureId:
    """Feature ``index`` of one sparse autoencoder (displays as ``SAE:{index}``)."""

    index: int

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise InterventionError(
                f"SaeFeatureId index must be a non-negative int, got {self.index!r}."
            )

    def __str__(self) -> str:
        return f"SAE:{self.index}"


@dataclass(frozen=True, order=True)
class CltFeatureId:
    """Feature ``index`` of the transcoder encoder at ``layer`` (displays as ``L{layer}:{index}``).

    Ordered by layer, then index.
    """

    layer: int
    index: int

    def __post_init__(self) -> None:
        for name in ("layer", "index"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InterventionError(
                    f"CltFeatureId {name} must be a non-negative int, got {value!r}."
                )

    def __str__(self) -> str:
        return f"L{self.layer}:{self.index}"


FeatureId = SaeFeatureId | CltFeatureId
F = TypeVar("F", SaeFeatureId, CltFeatureId)


def _sort_key(item: tuple[F, float]) -> tuple[int, float, F]:
    """Descending by activation, NaN last, ties broken by feature id (a total order)."""
    feature, value = item
    if math.isnan(value):
        return (1, 0.0, feature)
    return (0, -value, feature)


class SparseActivations(Generic[F]):
    """Non-zero feature activations, sorted by activation descending.

    Built from any iterable of ``(feature, activation)`` pairs; the order is restored on
    construction, so callers never see an unsorted instance.
    """

    __slots__ = ("_features",)

    def __init__(self, features: Sequence[tuple[F, float]] = ()) -> None:
        pairs = [(f, float(v)) for f, v in features]
        self._features: list[tuple[F, float]] = sorted(pairs, key=_sort_key)

    @classmethod
    def from_dense(
        cls, acts: torch.Tensor, layer: int | None = None
    ) -> SparseActivations:
        """Keep the strictly positive entries of a 1-D activation vector ``[F]``.

        ``layer`` given -> :class:`CltFeatureId` ids, else :class:`SaeFeatureId`.
        """
        if acts.dim() != 1:
            raise InterventionError(
                f"from_dense expects a 1-D activation vector [F], got shape {tuple(acts.shape)};"
                " select one position first."
            )
        flat = acts.detach().to("cpu", torch.float32)
        idx = torch.nonzero(flat > 0).flatten()
        vals = flat[idx].tolist()
        make = (lambda i: CltFeatureId(layer, i)) if layer is not None else SaeFeatureId
        return cls([(make(int(i)), v) for i, v in zip(idx.tolist(), vals, strict=True)])

    @property
    def features(self) -> list[tuple[F, float]]:
        """The ``(feature, activation)`` pairs, largest first (a copy)."""
        return list(self._features)

    def __len__(self) -> int:
        return len(self._features)

    def __bool__(self) -> bool:
        return bool(self._features)

    def __iter__(self) -> Iterator[tuple[F, float]]:
        return iter(self._features)

    def __getitem__(self, i: int) -> tuple[F, float]:
        return self._features[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseActivations):
            return NotImplemented
        return self._features == other._features

    def __repr__(self) -> str:
        head = ", ".join(f"{f}={v:.4g}" for f, v in self._features[:5])
        more = ", ..." if len(self._features) > 5 else ""
        return f"SparseActivations({len(self)} active: {head}{more})"

    def top_k(self, k: int) -> SparseActivations[F]:
        """The ``k`` largest activations (all of them if fewer are active)."""
        if k < 0:
            raise InterventionError(f"top_k needs k >= 0, got {k}.")
        return SparseActivations(self._features[:k])

    def truncate(self, k: int) -> None:
        """Keep only the ``k`` largest activations, in place (seed name)."""
        if k < 0:
            raise InterventionError(f"truncate needs k >= 0, got {k}.")
        del self._features[k:]

    def ids(self) -> list[F]:
        """Feature ids, largest activation first."""
        return [f for f, _ in self._features]

    def get(self, feature: F, default: float = 0.0) -> float:
        """Activation of ``feature`` (``default`` when it is not active)."""
        for f, v in self._features:
            if f == feature:
                return v
        return default

    def to_dense(self, n_features: int) -> torch.Tensor:
        """Dense fp32 vector ``[n_features]`` with the active entries filled in."""
        out = torch.zeros(n_features, dtype=torch.float32)
        for f, v in self._features:
            if f.index >= n_features:
                raise InterventionError(
                    f"feature {f} is out of range for n_features={n_features}; pass the"
                    " dictionary's width."
                )
            out[f.index] = v
        return out

    def to_dict(self) -> dict[str, float]:
        """``{str(feature): activation}`` for JSON output."""
        return {str(f): v for f, v in self._features}


__all__ = ["CltFeatureId", "FeatureId", "SaeFeatureId", "SparseActivations"]
