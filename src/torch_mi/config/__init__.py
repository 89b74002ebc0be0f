"""Transformer configuration: the dataclass, the family translators and auto-config."""

from .auto import (
    CompatibilityReport,
    auto_config,
    check_auto_compatibility,
    check_config_fields,
    from_hf_config,
    from_hf_config_auto,
)
from .families import SUPPORTED_MODEL_TYPES
from .types import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    Activation,
    MlpLayout,
    NormType,
    QkvLayout,
    RopeConfig,
    TransformerConfig,
)

__all__ = [
    "FULL_ATTENTION",
    "SLIDING_ATTENTION",
    "SUPPORTED_MODEL_TYPES",
    "Activation",
    "CompatibilityReport",
    "MlpLayout",
    "NormType",
    "QkvLayout",
    "RopeConfig",
    "TransformerConfig",
    "auto_config",
    "check_auto_compatibility",
    "check_config_fields",
    "from_hf_config",
    "from_hf_config_auto",
]
