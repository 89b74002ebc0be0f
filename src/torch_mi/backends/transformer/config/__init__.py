"""Transformer configuration: the dataclass, key readers and auto-config (the family
translators are in ``..families``)."""

from .auto import (
    CompatibilityReport,
    auto_config,
    check_auto_compatibility,
    check_config_fields,
    from_hf_config,
    from_hf_config_auto,
)
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
