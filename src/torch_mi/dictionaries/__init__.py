"""Sparse dictionaries: SAEs and transcoders (SPEC §8)."""

from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.clt_config import CltConfig, TranscoderSchema
from torch_mi.dictionaries.sae import SparseAutoencoder
from torch_mi.dictionaries.sae_config import (
    NormalizeActivations,
    SaeArchitecture,
    SaeConfig,
    TopKStrategy,
)
from torch_mi.dictionaries.types import CltFeatureId, FeatureId, SaeFeatureId, SparseActivations

__all__ = [
    "CltConfig",
    "CltFeatureId",
    "CrossLayerTranscoder",
    "FeatureId",
    "NormalizeActivations",
    "SaeArchitecture",
    "SaeConfig",
    "SaeFeatureId",
    "SparseActivations",
    "SparseAutoencoder",
    "TopKStrategy",
    "TranscoderSchema",
]
