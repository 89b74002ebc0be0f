"""Qwen3: LLaMA layout with per-head RMS QK-norm, explicit head_dim, no Q/K/V bias."""

from __future__ import annotations

from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish, qwen_windows
from ..config.types import TransformerConfig, activation_from_hf


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "qwen3 config")
    d = dims(keys)
    attention_bias = keys.bool("attention_bias", False)
    window, types = qwen_windows(keys, d["num_layers"])
    return finish(
        keys, model_type="qwen3", **d,
        norm_eps=keys.float("rms_norm_eps", 1e-6, positive=True),
        activation=activation_from_hf(keys.opt("hidden_act", "silu"), keys.where),
        qkv_bias=attention_bias, o_proj_bias=attention_bias, qk_norm=True,
        tie_word_embeddings=keys.bool("tie_word_embeddings", False),
        max_position_embeddings=keys.int("max_position_embeddings", 32768),
        layer_types=types, sliding_window=window,
    )
