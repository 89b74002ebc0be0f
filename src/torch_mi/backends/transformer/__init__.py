"""The generic decoder-only transformer backend (every HF family is data: config + weights)."""

from . import families as _families  # noqa: F401  (registers the architecture rows)
from .config import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    Activation,
    CompatibilityReport,
    MlpLayout,
    NormType,
    QkvLayout,
    RopeConfig,
    TransformerConfig,
    auto_config,
    check_auto_compatibility,
    check_config_fields,
    from_hf_config,
    from_hf_config_auto,
)
from .kv_cache import KVCache
from .masks import clear_mask_caches, create_causal_mask, create_generation_mask
from .model import GenericTransformer
from .points import TRANSFORMER_POINTS

__all__ = [
    "FULL_ATTENTION",
    "SLIDING_ATTENTION",
    "TRANSFORMER_POINTS",
    "Activation",
    "CompatibilityReport",
    "GenericTransformer",
    "KVCache",
    "MlpLayout",
    "NormType",
    "QkvLayout",
    "RopeConfig",
    "TransformerConfig",
    "auto_config",
    "check_auto_compatibility",
    "check_config_fields",
    "clear_mask_caches",
    "create_causal_mask",
    "create_generation_mask",
    "from_hf_config",
    "from_hf_config_auto",
]
