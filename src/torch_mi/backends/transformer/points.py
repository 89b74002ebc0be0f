"""The generic transformer's hook table: every point it fires, in firing order, with shapes.

A TransformerLens string means exactly the tensor TransformerLens 3.x produces under it
for the raw model (``fold_ln=False``, no centring or folding; HOOKS.md has the table). The
seed crate's variants keep their meaning; where the seed's string would collide with a TL
string that means another tensor, the variant has a string of its own (``attn.hook_in``,
``mlp.hook_in``, ``mlp.hook_out``).

Shapes use B batch, S positions, D hidden, H query heads, Hkv key/value heads, d head dim,
I MLP width, V vocabulary (``"batch"`` and ``"seq"`` stay symbolic).
"""

from __future__ import annotations

from ...hooks.points import (
    ATTN_OUT,
    EMBED,
    FINAL_NORM,
    MLP_OUT,
    RESID_MID,
    RESID_POST,
    RESID_PRE,
    PointKind,
    declare_final_kind,
    declare_point_kind,
)
from ...hooks.table import PointRow, PointTable
from .config.types import MlpLayout, TransformerConfig


def _kind(variant: str, suffix: str, doc: str, aliases: tuple[str, ...] = (),
          neg_inf_ok: bool = False) -> PointKind:
    return declare_point_kind(PointKind(
        variant, "blocks.{layer}." + suffix,
        tuple("blocks.{layer}." + a for a in aliases), doc, neg_inf_ok))


def _norm_kinds(prefix: str, variant: str, what: str) -> tuple[PointKind, PointKind]:
    """TL's two norm points: ``hook_scale`` (the rms, or std for LayerNorm) and
    ``hook_normalized`` (the input divided by it, BEFORE the gain)."""
    return (_kind(f"{variant}Scale", f"{prefix}.hook_scale", f"rms (std) of the {what} input"),
            _kind(f"{variant}Normalized", f"{prefix}.hook_normalized",
                  f"{what} input / scale, before the gain (TL)"))


ATTN_IN = _kind("AttnIn", "hook_attn_in", "resid_pre repeated per query head (TL)")
ATTN_Q_INPUT = _kind("AttnQInput", "hook_q_input", "resid_pre repeated per query head (TL)")
ATTN_K_INPUT = _kind("AttnKInput", "hook_k_input", "resid_pre repeated per KV head (TL)")
ATTN_V_INPUT = _kind("AttnVInput", "hook_v_input", "resid_pre repeated per KV head (TL)")
LN1_SCALE, LN1_NORMALIZED = _norm_kinds("ln1", "Ln1", "pre-attention norm's")
LN1_OUT = _kind("Ln1Out", "attn.hook_in", "pre-attention norm output, after its gain")
ATTN_Q = _kind("AttnQ", "attn.hook_q", "query projection, before QK-norm and RoPE")
ATTN_K = _kind("AttnK", "attn.hook_k", "key projection (KV heads), before QK-norm and RoPE")
ATTN_V = _kind("AttnV", "attn.hook_v", "value projection (KV heads)")
Q_NORM_SCALE, Q_NORM_NORMALIZED = _norm_kinds("attn.q_norm", "QNorm", "query QK-norm's")
K_NORM_SCALE, K_NORM_NORMALIZED = _norm_kinds("attn.k_norm", "KNorm", "key QK-norm's")
ATTN_ROT_Q = _kind("AttnRotQ", "attn.hook_rot_q", "query after QK-norm and RoPE")
ATTN_ROT_K = _kind("AttnRotK", "attn.hook_rot_k", "key after QK-norm and RoPE")
# Scores hold -inf by design (knockouts before the mask, the mask after it):
# check_finite and payload checks accept -inf there, never NaN or +inf.
ATTN_SCORES = _kind("AttnScores", "attn.hook_scores",
                    "scaled scores after soft-cap, BEFORE any mask (knockouts go here)",
                    neg_inf_ok=True)
ATTN_SCORES_MASKED = _kind("AttnScoresMasked", "attn.hook_attn_scores",
                           "scaled, soft-capped scores AFTER the mask (-inf where masked; TL)",
                           neg_inf_ok=True)
ATTN_PATTERN = _kind("AttnPattern", "attn.hook_pattern",
                     "softmax probabilities (a fully masked row is 0)")
ATTN_Z = _kind("AttnZ", "attn.hook_z", "per-head mixed values")
ATTN_RESULT = _kind("AttnResult", "attn.hook_result", "per-head output z_h W_O,h (no bias)")
LN1_POST_SCALE, LN1_POST_NORMALIZED = _norm_kinds("ln1_post", "Ln1Post", "post-attention norm's")
MLP_IN = _kind("MlpIn", "hook_mlp_in", "the MLP sub-layer's input: resid_mid (TL)")
LN2_SCALE, LN2_NORMALIZED = _norm_kinds("ln2", "Ln2", "pre-MLP norm's")
MLP_PRE = _kind("MlpPre", "mlp.hook_in", "pre-MLP norm output, after its gain (seed MlpPre)")
MLP_PRE_ACT = _kind("MlpPreAct", "mlp.hook_pre", "gate (or fc_in) pre-activation (TL)")
MLP_PRE_LINEAR = _kind("MlpPreLinear", "mlp.hook_pre_linear", "up projection of a gated MLP (TL)")
MLP_HIDDEN = _kind("MlpHidden", "mlp.hook_post", "neuron activations act(gate)*up (TL)",
                   aliases=("mlp.hook_hidden",))
MLP_POST = _kind("MlpPost", "mlp.hook_out", "MLP output before any post-FF norm (seed MlpPost)")
LN2_POST_SCALE, LN2_POST_NORMALIZED = _norm_kinds("ln2_post", "Ln2Post", "post-MLP norm's")
LN_FINAL_SCALE = declare_final_kind(PointKind(
    "LnFinalScale", "ln_final.hook_scale", doc="rms (std) of the final norm's input"))
LN_FINAL_NORMALIZED = declare_final_kind(PointKind(
    "LnFinalNormalized", "ln_final.hook_normalized",
    doc="final norm input / scale, before the gain (TL)"))
UNEMBED_OUT = declare_final_kind(PointKind(
    "UnembedOut", "unembed.hook_out", doc="logits before the final soft-cap (TL)"))


def _resid(c: TransformerConfig) -> tuple:
    return ("batch", "seq", c.hidden_size)


def _scale(c: TransformerConfig) -> tuple:
    return ("batch", "seq", 1)


def _heads(c: TransformerConfig) -> tuple:
    return ("batch", "seq", c.num_attention_heads, c.head_dim)


def _kv_heads(c: TransformerConfig) -> tuple:
    return ("batch", "seq", c.num_kv_heads, c.head_dim)


def _square(c: TransformerConfig) -> tuple:
    return ("batch", c.num_attention_heads, "seq", "seq")


def _neurons(c: TransformerConfig) -> tuple:
    return ("batch", "seq", c.intermediate_size)


def _head_inputs(heads_of) -> callable:
    return lambda c: ("batch", "seq", heads_of(c), c.hidden_size)


def _qk_norm(heads_of, last) -> callable:
    """TL applies QK-norm to [B*S*heads, d] rows."""
    return lambda c: (f"batch*seq*{heads_of(c)}", last(c))


def _q_heads(c: TransformerConfig) -> int:
    return c.num_attention_heads


def _kv(c: TransformerConfig) -> int:
    return c.num_kv_heads


def _post_norms(c: TransformerConfig) -> bool:
    return c.use_post_norms


def _qk_normed(c: TransformerConfig) -> bool:
    return c.qk_norm


def _one(c: TransformerConfig) -> int:
    return 1


def _head_dim(c: TransformerConfig) -> int:
    return c.head_dim


TRANSFORMER_POINTS = PointTable("transformer", [
    PointRow("embed", EMBED, _resid),
    PointRow("resid_pre", RESID_PRE, _resid),
    # TL's per-head inputs; hook_attn_in needs one input per KV head too (no GQA).
    PointRow("attn_in", ATTN_IN, _head_inputs(_q_heads),
             when=lambda c: c.num_kv_heads == c.num_attention_heads),
    PointRow("q_input", ATTN_Q_INPUT, _head_inputs(_q_heads)),
    PointRow("k_input", ATTN_K_INPUT, _head_inputs(_kv)),
    PointRow("v_input", ATTN_V_INPUT, _head_inputs(_kv)),
    PointRow("ln1_scale", LN1_SCALE, _scale),
    PointRow("ln1_normalized", LN1_NORMALIZED, _resid),
    PointRow("ln1_out", LN1_OUT, _resid),
    PointRow("q", ATTN_Q, _heads),
    PointRow("k", ATTN_K, _kv_heads),
    PointRow("v", ATTN_V, _kv_heads),
    PointRow("q_norm_scale", Q_NORM_SCALE, _qk_norm(_q_heads, _one), when=_qk_normed),
    PointRow("q_norm_normalized", Q_NORM_NORMALIZED, _qk_norm(_q_heads, _head_dim),
             when=_qk_normed),
    PointRow("k_norm_scale", K_NORM_SCALE, _qk_norm(_kv, _one), when=_qk_normed),
    PointRow("k_norm_normalized", K_NORM_NORMALIZED, _qk_norm(_kv, _head_dim),
             when=_qk_normed),
    PointRow("rot_q", ATTN_ROT_Q, _heads),
    PointRow("rot_k", ATTN_ROT_K, _kv_heads),
    PointRow("scores", ATTN_SCORES, _square),
    PointRow("attn_scores", ATTN_SCORES_MASKED, _square),
    PointRow("pattern", ATTN_PATTERN, _square),
    PointRow("z", ATTN_Z, _heads),
    PointRow("result", ATTN_RESULT, _head_inputs(_q_heads)),
    PointRow("ln1_post_scale", LN1_POST_SCALE, _scale, when=_post_norms),
    PointRow("ln1_post_normalized", LN1_POST_NORMALIZED, _resid, when=_post_norms),
    PointRow("attn_out", ATTN_OUT, _resid),
    PointRow("resid_mid", RESID_MID, _resid),
    PointRow("mlp_in", MLP_IN, _resid),
    PointRow("ln2_scale", LN2_SCALE, _scale),
    PointRow("ln2_normalized", LN2_NORMALIZED, _resid),
    PointRow("mlp_pre", MLP_PRE, _resid),
    PointRow("mlp_pre_act", MLP_PRE_ACT, _neurons),
    PointRow("mlp_pre_linear", MLP_PRE_LINEAR, _neurons,
             when=lambda c: c.mlp_layout is not MlpLayout.Plain),
    PointRow("mlp_hidden", MLP_HIDDEN, _neurons),
    PointRow("mlp_post", MLP_POST, _resid),
    PointRow("ln2_post_scale", LN2_POST_SCALE, _scale, when=_post_norms),
    PointRow("ln2_post_normalized", LN2_POST_NORMALIZED, _resid, when=_post_norms),
    PointRow("mlp_out", MLP_OUT, _resid),
    PointRow("resid_post", RESID_POST, _resid),
    PointRow("ln_final_scale", LN_FINAL_SCALE, _scale),
    PointRow("ln_final_normalized", LN_FINAL_NORMALIZED, _resid),
    PointRow("final_norm", FINAL_NORM, _resid),
    PointRow("unembed_out", UNEMBED_OUT, lambda c: ("batch", "seq", c.vocab_size)),
])
