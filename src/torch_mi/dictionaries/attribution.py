"""Seed attribution: rank dictionary features by how their decoder vectors point along a
direction (inventory §6.8).

Why: a feature's decoder vector is what it writes into the residual stream, so its dot
product with a direction (typically a token's unembedding column) is a *virtual weight*:
how much one unit of the feature pushes that token's logit, before later layers. No
activations and no multi-hop structure are involved; this is the seed's "attribution graph".

Semantics (seed): for every source layer ``s <= target`` of a CLT (per-layer schemas and
SAEs: only their own layer), score ``W_dec_s[:, target - s] @ direction``; with ``cosine`` the
direction is normalised (if its norm > 1e-10) and each score divided by its row norm (clamped
at 1e-10). Non-finite scores are dropped, edges sorted by signed score descending (ties by
feature id, a total order), then cut to ``top_k``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.sae import SparseAutoencoder
from torch_mi.dictionaries.types import CltFeatureId, FeatureId, SaeFeatureId
from torch_mi.errors import InterventionError

Dictionary = CrossLayerTranscoder | SparseAutoencoder
_EPS = 1e-10


@dataclass(frozen=True)
class AttributionEdge:
    """One virtual-weight score: ``feature``'s decoder vector · the direction.

    ``target_layer`` is the layer whose decoder slice gave the score (for the
    max-over-target-layers ranking, the best one); None for an SAE without a layer.
    """

    feature: FeatureId
    score: float
    target_layer: int | None = None

    def to_dict(self) -> dict:
        layer = getattr(self.feature, "layer", None)
        return {"feature": str(self.feature), "layer": layer, "index": self.feature.index,
                "score": self.score, "target_layer": self.target_layer}


def _edge_key(edge: AttributionEdge) -> tuple[float, int, int]:
    return (-edge.score, getattr(edge.feature, "layer", -1), edge.feature.index)


class AttributionGraph:
    """Edges into one target (layer, direction), sorted by score descending."""

    def __init__(self, target_layer: int | None, edges: Sequence[AttributionEdge] = ()) -> None:
        self._target = target_layer
        self._edges = sorted(edges, key=_edge_key)

    @property
    def target_layer(self) -> int | None:
        return self._target

    @property
    def edges(self) -> list[AttributionEdge]:
        """The edges, descending by signed score (a copy)."""
        return list(self._edges)

    def __len__(self) -> int:
        return len(self._edges)

    def __iter__(self) -> Iterator[AttributionEdge]:
        return iter(list(self._edges))

    def __getitem__(self, i: int) -> AttributionEdge:
        return self._edges[i]

    def __repr__(self) -> str:
        head = ", ".join(f"{e.feature}:{e.score:.4g}" for e in self._edges[:5])
        more = ", ..." if len(self._edges) > 5 else ""
        return f"AttributionGraph(target_layer={self._target}, [{head}{more}])"

    def is_empty(self) -> bool:
        return not self._edges

    def top_k(self, k: int) -> AttributionGraph:
        """A new graph with the first ``k`` edges."""
        _check_count("k", k)
        return AttributionGraph(self._target, self._edges[:k])

    def threshold(self, minimum: float) -> AttributionGraph:
        """A new graph keeping edges with ``|score| >= minimum``."""
        if not isinstance(minimum, (int, float)) or isinstance(minimum, bool) or not math.isfinite(
                minimum):
            raise InterventionError(f"threshold must be a finite number, got {minimum!r}")
        return AttributionGraph(self._target, [e for e in self._edges if abs(e.score) >= minimum])

    def features(self) -> list[FeatureId]:
        """The features, in edge order."""
        return [e.feature for e in self._edges]

    def into_edges(self) -> list[AttributionEdge]:
        return list(self._edges)

    def to_dict(self) -> dict:
        return {"target_layer": self._target, "edges": [e.to_dict() for e in self._edges]}


# ---- validation ---------------------------------------------------------------------------
def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InterventionError(f"{name} must be an int >= 0, got {value!r}")


def _d_model(dictionary: Dictionary) -> int:
    if isinstance(dictionary, CrossLayerTranscoder):
        return dictionary.config.d_model
    if isinstance(dictionary, SparseAutoencoder):
        return dictionary.d_in
    raise InterventionError(f"expected a SparseAutoencoder or CrossLayerTranscoder, got "
                            f"{type(dictionary).__name__}")


def _directions(dictionary: Dictionary, directions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack directions [D] -> [N, D] fp32 CPU, checking shapes."""
    d = _d_model(dictionary)
    if not directions:
        raise InterventionError("no directions given: pass at least one [D] tensor")
    for i, v in enumerate(directions):
        if not isinstance(v, torch.Tensor) or tuple(v.shape) != (d,):
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise InterventionError(f"direction {i} must be a [{d}] tensor (the dictionary's "
                                    f"d_model), got {shape}")
    return torch.stack([v.detach().to("cpu", torch.float32) for v in directions])


def _sae_layer(sae: SparseAutoencoder) -> int | None:
    try:
        return sae.hook_point.layer
    except Exception:  # an SAE whose hook name is unknown to torch-mi still has a decoder
        return None


def _slices(dictionary: Dictionary, target_layer: int | None
            ) -> Iterator[tuple[int | None, torch.Tensor]]:
    """(source layer, decoder slice [F, D] fp32 CPU at ``target_layer``) per source."""
    if isinstance(dictionary, SparseAutoencoder):
        layer = _sae_layer(dictionary)
        if target_layer is not None and layer is not None and target_layer != layer:
            raise InterventionError(f"this SAE writes at layer {layer}, not {target_layer}; "
                                    f"pass target_layer={layer} or None")
        yield layer, dictionary.tensors["W_dec"].detach().to("cpu", torch.float32)
        return
    if target_layer is None:
        raise InterventionError("a transcoder needs target_layer (the layer whose output "
                                "the decoder vectors are written to)")
    target = dictionary._check_layer(target_layer, "target layer")
    sources = range(target + 1) if dictionary.config.is_cross_layer else [target]
    for s in sources:
        yield s, dictionary.decoder_slice(s, target)


def _feature(dictionary: Dictionary, source: int | None, index: int) -> FeatureId:
    if isinstance(dictionary, SparseAutoencoder):
        return SaeFeatureId(index)
    return CltFeatureId(source, index)  # type: ignore[arg-type]


def _scores(rows: torch.Tensor, dirs: torch.Tensor, cosine: bool) -> torch.Tensor:
    """[F, D] x [N, D] -> [N, F] dot products (cosines: unit directions, row norms >= 1e-10)."""
    if cosine:
        norms = dirs.norm(dim=-1, keepdim=True)
        dirs = torch.where(norms > _EPS, dirs / norms.clamp_min(_EPS), dirs)
    scores = dirs @ rows.T
    if cosine:
        scores = scores / rows.norm(dim=-1).clamp_min(_EPS)
    return scores


def _edges(dictionary: Dictionary, source: int | None, scores: torch.Tensor,
           target: int | None) -> list[AttributionEdge]:
    keep = torch.nonzero(torch.isfinite(scores)).flatten()
    return [AttributionEdge(_feature(dictionary, source, i), float(v), target)
            for i, v in zip(keep.tolist(), scores[keep].tolist(), strict=True)]


# ---- public API ---------------------------------------------------------------------------
def build_attribution_graph_batch(dictionary: Dictionary, directions: Sequence[torch.Tensor],
                                  target_layer: int | None = None, top_k: int | None = None,
                                  *, cosine: bool = False) -> list[AttributionGraph]:
    """One graph per direction; each decoder slice is read once for all directions."""
    if top_k is not None:
        _check_count("top_k", top_k)
    dirs = _directions(dictionary, list(directions))  # [N, D]
    per_dir: list[list[AttributionEdge]] = [[] for _ in range(dirs.shape[0])]
    target = target_layer
    for source, rows in _slices(dictionary, target_layer):
        if isinstance(dictionary, SparseAutoencoder):
            target = source
        scores = _scores(rows, dirs, cosine)  # [N, F]
        for n in range(dirs.shape[0]):
            per_dir[n].extend(_edges(dictionary, source, scores[n], target))
    graphs = [AttributionGraph(target, edges) for edges in per_dir]
    return graphs if top_k is None else [g.top_k(top_k) for g in graphs]


def build_attribution_graph(dictionary: Dictionary, direction: torch.Tensor,
                            target_layer: int | None = None, top_k: int | None = None,
                            *, cosine: bool = False) -> AttributionGraph:
    """Features whose decoder vectors (at ``target_layer``) point along ``direction`` [D]."""
    return build_attribution_graph_batch(dictionary, [direction], target_layer, top_k,
                                         cosine=cosine)[0]


def score_features_by_decoder_projection(
        dictionary: Dictionary, direction: torch.Tensor, target_layer: int | None = None,
        top_k: int | None = None, *, cosine: bool = False) -> list[tuple[FeatureId, float]]:
    """``[(feature, score)]`` descending: decoder vector at ``target_layer`` · ``direction``."""
    graph = build_attribution_graph(dictionary, direction, target_layer, top_k, cosine=cosine)
    return [(e.feature, e.score) for e in graph]


def score_features_by_decoder_projection_batch(
        dictionary: Dictionary, directions: Sequence[torch.Tensor],
        target_layer: int | None = None, top_k: int | None = None, *, cosine: bool = False
) -> list[list[tuple[FeatureId, float]]]:
    """The batch form: one list per direction, decoders read once."""
    graphs = build_attribution_graph_batch(dictionary, directions, target_layer, top_k,
                                           cosine=cosine)
    return [[(e.feature, e.score) for e in g] for g in graphs]


def rank_features_max_over_targets(
        transcoder: CrossLayerTranscoder, direction: torch.Tensor, top_k: int | None = None,
        *, cosine: bool = True, source_layers: Sequence[int] | None = None) -> list[AttributionEdge]:
    """Rank every feature by its best score over the layers it writes to.

    A CLT feature of layer ``s`` writes to every ``l' >= s``; scoring only one target layer
    favours features of that layer, so the seed's CLT-vs-PLT study ranks by
    ``max over l' >= s of cosine(W_dec_s[f, l'-s], direction)``. Per-layer transcoders have
    one target (their own layer). Each edge's ``target_layer`` is the arg-max layer (the
    lowest one on ties).
    """
    if not isinstance(transcoder, CrossLayerTranscoder):
        raise InterventionError(f"max-over-target-layers ranking needs a CrossLayerTranscoder, "
                                f"got {type(transcoder).__name__}")
    if top_k is not None:
        _check_count("top_k", top_k)
    dirs = _directions(transcoder, [direction])
    L = transcoder.config.n_layers
    sources = range(L) if source_layers is None else [
        transcoder._check_layer(s, "source layer") for s in source_layers]
    edges: list[AttributionEdge] = []
    for s in dict.fromkeys(sources):
        targets = range(s, L) if transcoder.config.is_cross_layer else [s]
        best = torch.full((transcoder.config.n_features_per_layer,), -math.inf)
        arg = torch.full_like(best, s, dtype=torch.long)
        for t in targets:
            scores = _scores(transcoder.decoder_slice(s, t), dirs, cosine)[0]
            scores = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))
            better = scores > best
            best = torch.where(better, scores, best)
            arg = torch.where(better, torch.full_like(arg, t), arg)
        keep = torch.nonzero(torch.isfinite(best)).flatten().tolist()
        edges.extend(AttributionEdge(CltFeatureId(s, i), float(best[i]), int(arg[i]))
                     for i in keep)
    edges.sort(key=_edge_key)
    return edges if top_k is None else edges[:top_k]


__all__ = [
    "AttributionEdge",
    "AttributionGraph",
    "build_attribution_graph",
    "build_attribution_graph_batch",
    "rank_features_max_over_targets",
    "score_features_by_decoder_projection",
    "score_features_by_decoder_projection_batch",
]
