"""Interpretability toolkit: knockout, steering, logit lens, patching, positions, PCA,
probing. Model-agnostic functions built on ``forward(ids, HookSpec) -> HookCache``."""

from ..positions import (
    EncodingWithOffsets,
    PositionConversion,
    TextForwardResult,
    TokenWithOffset,
    convert_positions,
)
from .attribution_patching import attribution_patch_heads, attribution_patch_positions
from .decomposition import (
    LogitAttribution,
    accumulated_resid,
    apply_ln_to_stack,
    decompose_resid,
    decomposition_hooks,
    logit_attribution,
    stack_head_results,
)
from .dose import DOSE_LEVELS, DoseResponseCurve, DoseResponsePoint, SteeringCalibration, dose_response
from .head_patching import patch_heads, patch_positions
from .heads import (
    HEAD_KINDS,
    HeadScores,
    detect_heads,
    detection_pattern,
    plot_head_scores,
    repeated_random_tokens,
)
from .knockout import (
    AblationResult,
    AttentionEdge,
    BatchAblationResult,
    KnockoutSpec,
    create_knockout_mask,
    knockout_hooks,
    run_knockout,
)
from .logit_lens import (
    BatchLogitLens,
    LogitLensAnalysis,
    LogitLensResult,
    TokenPrediction,
    decode_predictions_with,
    format_probability,
    format_token,
    logit_lens,
)
from .patching import CausalTrace, causal_trace
from .path_patching import path_patch, path_patch_heads
from .pca import PcaResult, pca_top_k
from .probing import ProbeResult, collect_activations, probe_layers, train_probe
from .results import BatchComparison, LogitComparison, kl_divergence
from .rwkv_state import (
    StateAblationResult,
    StateSteeringResult,
    run_state_knockout,
    run_state_steering,
    state_knockout_per_layer,
)
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
    "HEAD_KINDS",
    "AblationResult",
    "AttentionEdge",
    "BatchAblationResult",
    "BatchComparison",
    "BatchLogitLens",
    "CausalTrace",
    "DoseResponseCurve",
    "DoseResponsePoint",
    "EncodingWithOffsets",
    "HeadScores",
    "InterventionType",
    "KnockoutSpec",
    "LogitAttribution",
    "LogitComparison",
    "LogitLensAnalysis",
    "LogitLensResult",
    "PcaResult",
    "PositionConversion",
    "ProbeResult",
    "StateAblationResult",
    "StateSteeringResult",
    "SteeringCalibration",
    "SteeringResult",
    "SteeringSpec",
    "TextForwardResult",
    "TokenPrediction",
    "TokenWithOffset",
    "accumulated_resid",
    "apply_ln_to_stack",
    "apply_steering",
    "attribution_patch_heads",
    "attribution_patch_positions",
    "causal_trace",
    "collect_activations",
    "convert_positions",
    "create_knockout_mask",
    "decode_predictions_with",
    "decompose_resid",
    "decomposition_hooks",
    "detect_heads",
    "detection_pattern",
    "dose_response",
    "format_probability",
    "format_token",
    "kl_divergence",
    "knockout_hooks",
    "logit_attribution",
    "logit_lens",
    "mean_activation",
    "mean_difference_vector",
    "measure_attention_to_targets",
    "patch_heads",
    "patch_positions",
    "path_patch",
    "path_patch_heads",
    "pca_top_k",
    "plot_head_scores",
    "probe_layers",
    "repeated_random_tokens",
    "run_knockout",
    "run_state_knockout",
    "run_state_steering",
    "run_steering",
    "stack_head_results",
    "state_knockout_per_layer",
    "steering_vector_hooks",
    "train_probe",
]
