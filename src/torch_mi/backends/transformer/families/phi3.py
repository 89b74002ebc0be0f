"""Phi-3: fused qkv_proj and gate_up_proj, optional partial rotary and LongRoPE."""

from __future__ import annotations

from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish, layer_types, sliding_window
from ..config.types import MlpLayout, QkvLayout, TransformerConfig, activation_from_hf


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "phi3 config")
    d = dims(keys)
    window = sliding_window(keys)
    return finish(
        keys, model_type="phi3", **d,
        norm_eps=keys.float("rms_norm_eps", 1e-5, positive=True),
        activation=activation_from_hf(keys.opt("hidden_act", "silu"), keys.where),
        qkv_layout=QkvLayout.Fused, mlp_layout=MlpLayout.GatedFused,
        tie_word_embeddings=keys.bool("tie_word_embeddings", False),
        max_position_embeddings=keys.int("max_position_embeddings", 4096),
        layer_types=layer_types(keys, d["num_layers"], window), sliding_window=window,
    )
