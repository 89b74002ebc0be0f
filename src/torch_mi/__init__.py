"""torch-mi: mechanistic interpretability for language models, built on PyTorch.

Model forward passes are re-implemented with built-in, TransformerLens-named hook points:
capture any activation, intervene anywhere, and run knockout, steering, logit lens and
patching experiments, numerically identical to HuggingFace transformers.
"""

from .backend import MIBackend, MIModel
from .cache import KVCache
from .config import (
    SUPPORTED_MODEL_TYPES,
    Activation,
    CompatibilityReport,
    MlpLayout,
    NormType,
    QkvLayout,
    RopeConfig,
    TransformerConfig,
    check_auto_compatibility,
    from_hf_config,
    from_hf_config_auto,
)
from .download import download_model, download_model_blocking
from .errors import (
    ConfigError,
    DownloadError,
    HookError,
    InputError,
    InterventionError,
    MemoryReportError,
    MIError,
    TokenizerError,
    WeightError,
)
from .hooks import (
    HookCache,
    HookPoint,
    HookSpec,
    Intervention,
    StateKnockoutSpec,
    StateSteeringSpec,
)
from .models import GenericTransformer
from .models.masks import clear_mask_caches, create_causal_mask, create_generation_mask
from .sampling import GenerationResult, extract_token_prob, sample_token
from .selection import HeadSpec, LayerSpec
from .tokenizer import MITokenizer

__version__ = "0.1.0"

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "Activation",
    "CompatibilityReport",
    "ConfigError",
    "DownloadError",
    "GenerationResult",
    "GenericTransformer",
    "HeadSpec",
    "HookCache",
    "HookError",
    "HookPoint",
    "HookSpec",
    "InputError",
    "Intervention",
    "InterventionError",
    "KVCache",
    "LayerSpec",
    "MIBackend",
    "MIError",
    "MIModel",
    "MITokenizer",
    "MemoryReportError",
    "MlpLayout",
    "NormType",
    "QkvLayout",
    "RopeConfig",
    "StateKnockoutSpec",
    "StateSteeringSpec",
    "TokenizerError",
    "TransformerConfig",
    "WeightError",
    "check_auto_compatibility",
    "clear_mask_caches",
    "create_causal_mask",
    "create_generation_mask",
    "download_model",
    "download_model_blocking",
    "extract_token_prob",
    "from_hf_config",
    "from_hf_config_auto",
    "sample_token",
]
