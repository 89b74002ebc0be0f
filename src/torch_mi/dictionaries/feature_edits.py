"""Edits of feature activations inside a splice: ablate, clamp, scale or add features at
chosen positions.

Why a value and not a callback: an edit is checked when built (feature ids, finite numbers,
integer positions) and applied as one masked ``torch.where`` on the activations
``[..., S, F]`` of one forward, so a splice with edits costs one extra decode.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import torch

from torch_mi.dictionaries.types import CltFeatureId, SaeFeatureId
from torch_mi.errors import InterventionError

Feature = int | SaeFeatureId | CltFeatureId


class EditKind(str, Enum):
    ABLATE = "ablate"  # set to 0
    CLAMP = "clamp"    # set to value
    SCALE = "scale"    # multiply by value
    ADD = "add"        # add value


def _features(features: Feature | Iterable[Feature]) -> tuple[Feature, ...]:
    if isinstance(features, (int, SaeFeatureId, CltFeatureId)) and not isinstance(features, bool):
        features = (features,)
    try:
        items = tuple(features)  # type: ignore[arg-type]
    except TypeError:
        raise InterventionError(f"features must be a feature id (int, SaeFeatureId, "
                                f"CltFeatureId) or a list of them, got {features!r:.60}") from None
    for f in items:
        bad_int = isinstance(f, bool) or (isinstance(f, int) and f < 0)
        if bad_int or not isinstance(f, (int, SaeFeatureId, CltFeatureId)):
            raise InterventionError(f"feature {f!r:.60} is not a feature id: give an int >= 0, "
                                    f"an SaeFeatureId or a CltFeatureId")
    if not items:
        raise InterventionError("a feature edit needs at least one feature")
    return items


def parse_positions(positions: int | Iterable[int] | None) -> tuple[int, ...] | None:
    if positions is None:
        return None
    if isinstance(positions, numbers.Integral) and not isinstance(positions, bool):
        positions = (int(positions),)
    try:
        items = tuple(positions)  # type: ignore[arg-type]
    except TypeError:
        raise InterventionError(f"positions must be an int, a list of ints or None (all), got "
                                f"{positions!r:.60}") from None
    if not items or any(isinstance(p, bool) or not isinstance(p, numbers.Integral) for p in items):
        raise InterventionError(f"positions must be a non-empty list of ints (or None for all "
                                f"positions), got {positions!r:.60}")
    return tuple(int(p) for p in items)


def resolve_positions(positions: tuple[int, ...] | None, seq_len: int) -> list[int] | None:
    """Non-negative positions for a sequence of ``seq_len`` (None: all); InterventionError
    for one outside ``-seq_len..seq_len-1``."""
    if positions is None:
        return None
    out = []
    for p in positions:
        if not -seq_len <= p < seq_len:
            raise InterventionError(f"position {p} is outside the sequence of {seq_len} tokens "
                                    f"(valid: {-seq_len}..{seq_len - 1})")
        out.append(p % seq_len)
    return out


@dataclass(frozen=True)
class FeatureEdit:
    """One edit of some features' activations at some positions (None: every position).

    Build with :meth:`ablate`, :meth:`clamp`, :meth:`scale` or :meth:`add`. Features are
    ints / :class:`SaeFeatureId` for an SAE and :class:`CltFeatureId` for a transcoder.
    """

    kind: EditKind
    features: tuple[Feature, ...]
    value: float = 0.0
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EditKind(self.kind))
        object.__setattr__(self, "features", _features(self.features))
        object.__setattr__(self, "positions", parse_positions(self.positions))
        value = self.value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InterventionError(f"FeatureEdit.{self.kind.value}: the value must be a finite "
                                    f"number, got {value!r:.60}")
        object.__setattr__(self, "value", float(value))

    @classmethod
    def ablate(cls, features: Feature | Iterable[Feature],
               positions: int | Iterable[int] | None = None) -> FeatureEdit:
        return cls(EditKind.ABLATE, features, 0.0, positions)

    @classmethod
    def clamp(cls, features: Feature | Iterable[Feature], value: float,
              positions: int | Iterable[int] | None = None) -> FeatureEdit:
        return cls(EditKind.CLAMP, features, value, positions)

    @classmethod
    def scale(cls, features: Feature | Iterable[Feature], factor: float,
              positions: int | Iterable[int] | None = None) -> FeatureEdit:
        return cls(EditKind.SCALE, features, factor, positions)

    @classmethod
    def add(cls, features: Feature | Iterable[Feature], value: float,
            positions: int | Iterable[int] | None = None) -> FeatureEdit:
        return cls(EditKind.ADD, features, value, positions)

    def apply(self, acts: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """``acts`` [..., S, F] with this edit at (positions x ``indices``); a new tensor."""
        if not indices:
            return acts
        seq, width = acts.shape[-2], acts.shape[-1]
        mask = torch.zeros(seq, width, dtype=torch.bool, device=acts.device)  # [S, F]
        rows = resolve_positions(self.positions, seq)
        cols = torch.tensor(indices, device=acts.device)
        if rows is None:
            mask[:, cols] = True
        else:
            mask[torch.tensor(rows, device=acts.device)[:, None], cols[None, :]] = True
        if self.kind is EditKind.ABLATE:
            new = torch.zeros_like(acts)
        elif self.kind is EditKind.CLAMP:
            new = torch.full_like(acts, self.value)
        elif self.kind is EditKind.SCALE:
            new = acts * self.value
        else:
            new = acts + self.value
        return torch.where(mask, new, acts)


def sae_indices(edit: FeatureEdit, d_sae: int) -> list[int]:
    """The SAE feature indices of ``edit`` (ints or SaeFeatureId), range-checked."""
    out = []
    for f in edit.features:
        if isinstance(f, CltFeatureId):
            raise InterventionError(f"{f} is a transcoder feature; an SAE splice takes ints or "
                                    f"SaeFeatureId")
        index = f.index if isinstance(f, SaeFeatureId) else f
        if not 0 <= index < d_sae:
            raise InterventionError(f"feature {index} is out of range for d_sae={d_sae}")
        out.append(index)
    return out


def clt_indices(edit: FeatureEdit, layer: int, n_layers: int, width: int) -> list[int]:
    """The indices of ``edit``'s features that live in ``layer`` (CltFeatureId only)."""
    out = []
    for f in edit.features:
        if not isinstance(f, CltFeatureId):
            raise InterventionError(f"a transcoder splice edits CltFeatureId(layer, index) "
                                    f"features, got {f!r:.60}")
        if not 0 <= f.layer < n_layers or f.index >= width:
            raise InterventionError(f"feature {f} is out of range: this transcoder has layers "
                                    f"0..{n_layers - 1} of {width} features")
        if f.layer == layer:
            out.append(f.index)
    return out


def apply_edits(acts: torch.Tensor, edits: tuple[FeatureEdit, ...], indices: list[list[int]]
                ) -> torch.Tensor:
    """Every edit in order (``indices[i]`` are edit i's feature indices for these acts)."""
    for edit, idx in zip(edits, indices, strict=True):
        acts = edit.apply(acts, idx)
    return acts
