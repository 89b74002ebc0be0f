"""torch-mi: mechanistic interpretability for language models, built on PyTorch.

Model forward passes are re-implemented with built-in, TransformerLens-named hook points:
capture any activation, intervene anywhere, and run knockout, steering, logit lens and
patching experiments, numerically identical to HuggingFace transformers.

``__all__`` lists what a user types day to day; every other public name (the seed crate's
whole vocabulary) is importable from its subpackage and, lazily, from here.
"""

from importlib import import_module
from typing import Any

from .backends import MIBackend
from .errors import (
    ConfigError,
    HookError,
    InputError,
    InterventionError,
    MIError,
    WeightError,
)
from .hooks import HookCache, HookPoint, HookSpec, Intervention
from .interp import (
    AblationResult,
    CausalTrace,
    KnockoutSpec,
    LogitLensAnalysis,
    SteeringResult,
    SteeringSpec,
    causal_trace,
    dose_response,
    kl_divergence,
    logit_lens,
    run_knockout,
    run_steering,
)
from .memory import estimate_memory, track_memory
from .model import LanguageModel, MIModel
from .sampling import GenerationResult, extract_token_prob, sample_token
from .selection import HeadSpec, LayerSpec

__version__ = "0.1.0"

__all__ = [
    "AblationResult",
    "CausalTrace",
    "ConfigError",
    "GenerationResult",
    "HeadSpec",
    "HookCache",
    "HookError",
    "HookPoint",
    "HookSpec",
    "InputError",
    "Intervention",
    "InterventionError",
    "KnockoutSpec",
    "LanguageModel",
    "LayerSpec",
    "LogitLensAnalysis",
    "MIBackend",
    "MIError",
    "MIModel",
    "SteeringResult",
    "SteeringSpec",
    "WeightError",
    "causal_trace",
    "dose_response",
    "estimate_memory",
    "extract_token_prob",
    "kl_divergence",
    "logit_lens",
    "run_knockout",
    "run_steering",
    "sample_token",
    "track_memory",
]

# Everything else, by the subpackage that owns it (resolved on first access).
_ELSEWHERE: dict[str, str] = {
    **dict.fromkeys((
        "Activation", "CompatibilityReport", "GenericTransformer", "KVCache", "MlpLayout",
        "NormType", "QkvLayout", "RopeConfig", "TransformerConfig", "check_auto_compatibility",
        "clear_mask_caches", "create_causal_mask", "create_generation_mask", "from_hf_config",
        "from_hf_config_auto"), "backends.transformer"),
    **dict.fromkeys(("LoopFeedback", "LoopSpec", "forward_looped", "generate_looped",
                     "RecurrentFeedbackEntry", "RecurrentPassSpec"), "backends.looped"),
    **dict.fromkeys(("ActivationCache", "AttentionCache", "FullActivationCache"), "cache"),
    **dict.fromkeys(("download_model", "download_model_blocking"), "download"),
    **dict.fromkeys(("DownloadError", "MemoryReportError", "TokenizerError"), "errors"),
    **dict.fromkeys(("StateKnockoutSpec", "StateSteeringSpec"), "hooks"),
    **dict.fromkeys((
        "DOSE_LEVELS", "AttentionEdge", "DoseResponseCurve", "DoseResponsePoint",
        "InterventionType", "LogitLensResult", "PcaResult", "ProbeResult",
        "SteeringCalibration", "StateAblationResult", "StateSteeringResult", "TokenPrediction",
        "apply_steering", "collect_activations", "run_state_knockout", "run_state_steering",
        "state_knockout_per_layer",
        "create_knockout_mask", "knockout_hooks", "mean_difference_vector",
        "measure_attention_to_targets", "pca_top_k", "probe_layers", "steering_vector_hooks",
        "train_probe"), "interp"),
    **dict.fromkeys(("MemoryEstimate", "MemoryReport", "MemorySnapshot", "MemoryTracker",
                     "measure_forward", "sync_and_trim_gpu"), "memory"),
    **dict.fromkeys(("EncodingWithOffsets", "PositionConversion", "TextForwardResult",
                     "TokenWithOffset", "convert_positions"), "positions"),
    "MITokenizer": "tokenizer",
    "WorldTokenizer": "world_tokenizer",
    "SUPPORTED_MODEL_TYPES": "backends",
}


_SUBPACKAGES = frozenset({"dictionaries", "memory"})


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_MODEL_TYPES":
        from .backends import supported_model_types

        return supported_model_types()
    if name in _SUBPACKAGES:  # mi.dictionaries without importing torch_mi.dictionaries first
        value = import_module(f".{name}", __name__)
        globals()[name] = value
        return value
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'torch_mi' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ELSEWHERE, *_SUBPACKAGES})
