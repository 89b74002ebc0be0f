"""Interpretability toolkit: knockout, steering, logit lens, patching, positions, PCA,
probing. Model-agnostic functions built on ``forward(ids, HookSpec) -> HookCache``."""

from ..positions import (
    EncodingWithOffsets,
    PositionConversion,
    TextForwardResult,
    TokenWithOffset,
    convert_positions,
)
from .dose import DOSE_LEVELS, DoseResponseCurve, DoseResponsePoint, SteeringCalibration, dose_response
from .knockout import (
    AblationResult,
    AttentionEdge,
    KnockoutSpec,
    create_knockout_mask,
    knockout_hooks,
    run_knockout,
)
from .logit_lens import (
    LogitLensAnalysis,
    LogitLensResult,
    TokenPrediction,
    decode_predictions_with,
    format_probability,
    format_token,
    logit_lens,
)
from .patching import CausalTrace, causal_trace
from .pca import PcaResult, pca_top_k
from .probing import ProbeResult, collect_activations, probe_layers, train_probe
from .results import LogitComparison, kl_divergence
from .steering import (
    InterventionType,
    SteeringResult,
    SteeringSpec,
    apply_steering,
    measure_attention_to_targets,
    run_steering,
)
from .vectors import mean_activation, mean_difference_vector, steering_vector_hooks

__all__ = [
    "DOSE_LEVELS",
    "AblationResult",
    "AttentionEdge",
    "CausalTrace",
    "DoseResponseCurve",
    "DoseResponsePoint",
    "EncodingWithOffsets",
    "InterventionType",
    "KnockoutSpec",
    "LogitComparison",
    "LogitLensAnalysis",
    "LogitLensResult",
    "PcaResult",
    "PositionConversion",
    "ProbeResult",
    "SteeringCalibration",
    "SteeringResult",
    "SteeringSpec",
    "TextForwardResult",
    "TokenPrediction",
    "TokenWithOffset",
    "apply_steering",
    "causal_trace",
    "collect_activations",
    "convert_positions",
    "create_knockout_mask",
    "decode_predictions_with",
    "dose_response",
    "format_probability",
    "format_token",
    "kl_divergence",
    "knockout_hooks",
    "logit_lens",
    "mean_activation",
    "mean_difference_vector",
    "measure_attention_to_targets",
    "pca_top_k",
    "probe_layers",
    "run_knockout",
    "run_steering",
    "steering_vector_hooks",
    "train_probe",
]
