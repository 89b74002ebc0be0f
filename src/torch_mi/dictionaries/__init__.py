"""Sparse dictionaries: SAEs and transcoders (SPEC §8)."""

from torch_mi.dictionaries.attribution import (
    AttributionEdge,
    AttributionGraph,
    build_attribution_graph,
    build_attribution_graph_batch,
    rank_features_max_over_targets,
    score_features_by_decoder_projection,
    score_features_by_decoder_projection_batch,
)
from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.clt_config import CltConfig, TranscoderSchema
from torch_mi.dictionaries.feature_edits import EditKind, FeatureEdit
from torch_mi.dictionaries.injection import (
    AddAt,
    FeatureInterventionResult,
    inject,
    intervene_features,
    prepare_hook_injection,
    suppress_and_inject,
)
from torch_mi.dictionaries.sae import SparseAutoencoder
from torch_mi.dictionaries.sae_config import (
    NormalizeActivations,
    SaeArchitecture,
    SaeConfig,
    TopKStrategy,
)
from torch_mi.dictionaries.splice import SPLICE_NAMES, SaeSplice, splice, splice_point
from torch_mi.dictionaries.types import CltFeatureId, FeatureId, SaeFeatureId, SparseActivations

__all__ = [
    "SPLICE_NAMES",
    "AddAt",
    "AttributionEdge",
    "AttributionGraph",
    "CltConfig",
    "CltFeatureId",
    "CrossLayerTranscoder",
    "EditKind",
    "FeatureEdit",
    "FeatureId",
    "FeatureInterventionResult",
    "NormalizeActivations",
    "SaeArchitecture",
    "SaeConfig",
    "SaeFeatureId",
    "SaeSplice",
    "SparseActivations",
    "SparseAutoencoder",
    "TopKStrategy",
    "TranscoderSchema",
    "build_attribution_graph",
    "build_attribution_graph_batch",
    "inject",
    "intervene_features",
    "prepare_hook_injection",
    "rank_features_max_over_targets",
    "score_features_by_decoder_projection",
    "score_features_by_decoder_projection_batch",
    "splice",
    "splice_point",
    "suppress_and_inject",
]
