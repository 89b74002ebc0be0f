"""Feature injection (the seed's ``prepare_hook_injection``), the suppress + inject
protocol, and feature edits through a splice, with KL / top changed tokens / logit diff.

Injection adds ``strength * sum_i w_i W_dec[i]`` at the dictionary's write point: the SAE's
own hook, or for a transcoder ``feature_output_hook`` of every target layer (a CLT feature
of layer ``s`` writes into each ``l >= s``; the seed added the same vector at
``ResidPost(l)``, which equals adding it to layer ``l``'s MLP output). Suppression in the
seed's protocol is a fixed-magnitude *negative* injection, not a clamp of the feature's
actual activation; use :func:`intervene_features` with ``FeatureEdit.ablate`` for that.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.feature_edits import (
    Feature,
    FeatureEdit,
    parse_positions,
    resolve_positions,
)
from torch_mi.dictionaries.sae import SparseAutoencoder
from torch_mi.dictionaries.splice import splice
from torch_mi.dictionaries.types import CltFeatureId, SaeFeatureId
from torch_mi.errors import InterventionError
from torch_mi.hooks.call import ForwardCall
from torch_mi.hooks.interventions import Intervention, fit_payload
from torch_mi.hooks.points import HookPoint
from torch_mi.hooks.spec import HookSpec
from torch_mi.interp.results import LogitComparison

Dictionary = SparseAutoencoder | CrossLayerTranscoder
Weighted = Feature | tuple[Feature, float]


@dataclass(frozen=True, eq=False)
class AddAt(Intervention):
    """Add ``vector`` (the activation's trailing shape, or its flattening) at sequence
    positions (dim 1 of [B,S,...]; None: every position)."""

    vector: torch.Tensor
    positions: tuple[int, ...] | None = None

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        trailing = tensor.shape[2:]
        vec = self.vector
        if vec.shape != trailing and vec.numel() == math.prod(trailing):
            vec = vec.reshape(trailing)                    # hook_z: [H*d] -> [H, d]
        vec = fit_payload("AddAt", vec, tensor[0, 0], point)
        rows = resolve_positions(self.positions, tensor.shape[1])
        if rows is None:
            return tensor + vec
        out = tensor.clone()
        out[:, rows] = out[:, rows] + vec
        return out

    def __repr__(self) -> str:
        return f"AddAt(vector{list(self.vector.shape)}, positions={self.positions})"


def _weighted(features: Weighted | Iterable[Weighted]) -> list[tuple[Feature, float]]:
    if isinstance(features, (int, SaeFeatureId, CltFeatureId)):
        features = [features]  # a single (id, weight) pair goes in a list: [(id, w)]
    out = []
    for item in features:
        feature, weight = item if isinstance(item, tuple) else (item, 1.0)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise InterventionError(f"feature weight must be a finite number, got {weight!r:.40}")
        out.append((feature, float(weight)))
    if not out:
        raise InterventionError("no features to inject: give at least one feature id")
    return out


def _check_strength(strength: object) -> float:
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not math.isfinite(strength):
        raise InterventionError(f"strength must be a finite number, got {strength!r:.40}")
    return float(strength)


def _sae_vector(sae: SparseAutoencoder, features: list[tuple[Feature, float]]) -> torch.Tensor:
    vec = torch.zeros(sae.d_in, device=sae.device)                   # [d_in] fp32
    for feature, weight in features:
        if isinstance(feature, CltFeatureId):
            raise InterventionError(f"{feature} is a transcoder feature; this is an SAE")
        vec = vec + weight * sae.decoder_vector(feature)
    return vec


def _clt_vectors(clt: CrossLayerTranscoder, features: list[tuple[Feature, float]],
                 target_layers: Iterable[int] | None) -> dict[int, torch.Tensor]:
    """{target layer: [D] fp32} summed over the features that write there."""
    c = clt.config
    wanted = None if target_layers is None else set(target_layers)
    pairs: dict[int, list[tuple[CltFeatureId, float]]] = {}
    for feature, weight in features:
        if not isinstance(feature, CltFeatureId):
            raise InterventionError(f"a transcoder takes CltFeatureId(layer, index) features, "
                                    f"got {feature!r:.60}")
        clt._check_pair(feature, feature.layer)                    # range checks
        last = c.n_layers if c.is_cross_layer else feature.layer + 1
        for target in range(feature.layer, last):
            if wanted is None or target in wanted:
                pairs.setdefault(target, []).append((feature, weight))
    if not pairs:
        raise InterventionError(f"none of the features writes to target layers "
                                f"{sorted(wanted or [])}: a feature of layer s writes to "
                                f"layers >= s (its own layer only for per-layer transcoders)")
    out = {}
    for target, group in sorted(pairs.items()):
        vectors = clt.extract_decoder_vectors([f for f, _ in group], target)
        out[target] = sum(w * vectors[f] for f, w in group)
    return out


def prepare_hook_injection(dictionary: Dictionary, features: Weighted | Iterable[Weighted], *,
                           strength: float = 1.0, position: int | Iterable[int] | None = None,
                           target_layers: Iterable[int] | None = None,
                           spec: HookSpec | None = None) -> HookSpec:
    """A HookSpec adding ``strength * sum w_i W_dec[i]`` at the write points (see module).

    ``features``: ids or ``(id, weight)`` pairs; ``position``: int(s), None for all;
    ``target_layers`` restricts a transcoder's targets (default: every layer a feature
    writes to). Extends ``spec`` when given.
    """
    strength = _check_strength(strength)
    weighted = _weighted(features)
    positions = parse_positions(position)
    spec = HookSpec() if spec is None else spec
    if isinstance(dictionary, SparseAutoencoder):
        if target_layers is not None:
            raise InterventionError("target_layers= is for transcoders; an SAE writes at its hook")
        vec = strength * _sae_vector(dictionary, weighted)
        return spec.intervene(dictionary.hook_point, AddAt(vec, positions))
    if isinstance(dictionary, CrossLayerTranscoder):
        for target, vec in _clt_vectors(dictionary, weighted, target_layers).items():
            spec.intervene(dictionary.config.output_point(target), AddAt(strength * vec, positions))
        return spec
    raise InterventionError(f"expected a SparseAutoencoder or CrossLayerTranscoder, got "
                            f"{type(dictionary).__name__}")


class FeatureInterventionResult(LogitComparison):
    """Baseline vs intervened logits: the full [B,S,V] tensors, and the LogitComparison of
    the last position of the first prompt (KL, top changed tokens, logit diff)."""

    def __init__(self, baseline: torch.Tensor, intervened: torch.Tensor) -> None:
        super().__init__(baseline[0, -1], intervened[0, -1])
        self.baseline = baseline.detach()
        self.intervened = intervened.detach()

    def at(self, position: int = -1, batch: int = 0) -> LogitComparison:
        """The comparison at another position / prompt."""
        return LogitComparison(self.baseline[batch, position], self.intervened[batch, position])


def compare(model, input_ids: torch.Tensor, spec: HookSpec) -> FeatureInterventionResult:
    """Plain forward vs forward with ``spec``."""
    with torch.no_grad():
        base = model.forward(input_ids).output()
        other = model.forward(input_ids, spec).output()
    return FeatureInterventionResult(base, other)


def inject(model, input_ids: torch.Tensor, dictionary: Dictionary,
           features: Weighted | Iterable[Weighted], *, strength: float = 1.0,
           position: int | Iterable[int] | None = None,
           target_layers: Iterable[int] | None = None) -> FeatureInterventionResult:
    """Inject features' decoder vectors and compare with the plain forward."""
    spec = prepare_hook_injection(dictionary, features, strength=strength, position=position,
                                  target_layers=target_layers)
    return compare(model, input_ids, spec)


def suppress_and_inject(model, input_ids: torch.Tensor, dictionary: Dictionary,
                        suppress: Weighted | Iterable[Weighted],
                        inject: Weighted | Iterable[Weighted], *, strength: float = 10.0,
                        position: int | Iterable[int] | None = None,
                        target_layers: Iterable[int] | None = None) -> FeatureInterventionResult:
    """The seed's protocol: ``-strength`` injection of ``suppress`` plus ``+strength``
    injection of ``inject`` at ``position`` (every downstream layer for CLTs)."""
    strength = _check_strength(strength)
    spec = prepare_hook_injection(dictionary, suppress, strength=-strength, position=position,
                                  target_layers=target_layers)
    prepare_hook_injection(dictionary, inject, strength=strength, position=position,
                           target_layers=target_layers, spec=spec)
    return compare(model, input_ids, spec)


def intervene_features(model, input_ids: torch.Tensor, dictionary: Dictionary,
                       edits: FeatureEdit | Iterable[FeatureEdit], *,
                       layers: Iterable[int] | None = None) -> FeatureInterventionResult:
    """Ablate / clamp / scale / add features through a splice with the error term (so only
    the edited features' contributions change) and compare with the plain forward."""
    edits = (edits,) if isinstance(edits, FeatureEdit) else tuple(edits)
    spec = splice(HookSpec(), dictionary, use_error_term=True, edits=edits, layers=layers)
    return compare(model, input_ids, spec)


__all__ = ["AddAt", "FeatureInterventionResult", "compare", "inject", "intervene_features",
           "prepare_hook_injection", "suppress_and_inject"]
