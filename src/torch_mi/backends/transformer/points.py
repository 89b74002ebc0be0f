"""The generic transformer's hook table: every point it fires, in firing order, with shapes.

Shapes use B batch, S positions, D hidden, H query heads, Hkv key/value heads, d head dim,
I MLP width (symbols ``"batch"`` and ``"seq"`` stay symbolic).
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
    declare_point_kind,
)
from ...hooks.table import PointRow, PointTable
from .config.types import TransformerConfig


def _kind(variant: str, suffix: str, doc: str, aliases: tuple[str, ...] = ()) -> PointKind:
    return declare_point_kind(PointKind(
        variant, "blocks.{layer}." + suffix,
        tuple("blocks.{layer}." + a for a in aliases), doc))


LN1_NORMALIZED = _kind("Ln1Normalized", "ln1.hook_normalized", "output of the pre-attention norm")
ATTN_Q = _kind("AttnQ", "attn.hook_q", "query projection, before RoPE")
ATTN_K = _kind("AttnK", "attn.hook_k", "key projection (KV heads), before RoPE")
ATTN_V = _kind("AttnV", "attn.hook_v", "value projection (KV heads)")
ATTN_ROT_Q = _kind("AttnRotQ", "attn.hook_rot_q", "query after RoPE (and QK-norm)")
ATTN_ROT_K = _kind("AttnRotK", "attn.hook_rot_k", "key after RoPE (and QK-norm)")
ATTN_SCORES = _kind("AttnScores", "attn.hook_scores",
                    "scaled scores after soft-cap, before any mask")
ATTN_PATTERN = _kind("AttnPattern", "attn.hook_pattern",
                     "softmax probabilities (a fully masked row is 0)")
ATTN_Z = _kind("AttnZ", "attn.hook_z", "per-head mixed values")
MLP_PRE = _kind("MlpPre", "mlp.hook_pre", "normalised MLP input",
                aliases=("ln2.hook_normalized", "mlp.hook_in"))
MLP_HIDDEN = _kind("MlpHidden", "mlp.hook_hidden", "input of the down projection (neurons)")
MLP_POST = _kind("MlpPost", "mlp.hook_post", "MLP output, before Gemma-2's post-FF norm")


def _resid(c: TransformerConfig) -> tuple:
    return ("batch", "seq", c.hidden_size)


def _heads(c: TransformerConfig) -> tuple:
    return ("batch", c.num_attention_heads, "seq", c.head_dim)


def _kv_heads(c: TransformerConfig) -> tuple:
    return ("batch", c.num_kv_heads, "seq", c.head_dim)


def _square(c: TransformerConfig) -> tuple:
    return ("batch", c.num_attention_heads, "seq", "seq")


TRANSFORMER_POINTS = PointTable("transformer", [
    PointRow("embed", EMBED, _resid),
    PointRow("resid_pre", RESID_PRE, _resid),
    PointRow("ln1", LN1_NORMALIZED, _resid),
    PointRow("q", ATTN_Q, _heads),
    PointRow("k", ATTN_K, _kv_heads),
    PointRow("v", ATTN_V, _kv_heads),
    PointRow("rot_q", ATTN_ROT_Q, _heads),
    PointRow("rot_k", ATTN_ROT_K, _kv_heads),
    PointRow("scores", ATTN_SCORES, _square),
    PointRow("pattern", ATTN_PATTERN, _square),
    PointRow("z", ATTN_Z, lambda c: ("batch", "seq", c.num_attention_heads, c.head_dim)),
    PointRow("attn_out", ATTN_OUT, _resid),
    PointRow("resid_mid", RESID_MID, _resid),
    PointRow("mlp_pre", MLP_PRE, _resid),
    PointRow("mlp_hidden", MLP_HIDDEN, lambda c: ("batch", "seq", c.intermediate_size)),
    PointRow("mlp_post", MLP_POST, _resid),
    PointRow("mlp_out", MLP_OUT, _resid),
    PointRow("resid_post", RESID_POST, _resid),
    PointRow("final_norm", FINAL_NORM, _resid),
])
