"""Qwen2: LLaMA with Q/K/V biases and optional sliding window on the upper layers."""

from __future__ import annotations

from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish, qwen_windows
from ..config.types import TransformerConfig, activation_from_hf


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "qwen2 config")
    d = dims(keys)
    window, types = qwen_windows(keys, d["num_layers"])
    return finish(
        keys, model_type="qwen2", **d,
        norm_eps=keys.float("rms_norm_eps", 1e-6, positive=True),
        activation=activation_from_hf(keys.opt("hidden_act", "silu"), keys.where),
        qkv_bias=True,
        tie_word_embeddings=keys.bool("tie_word_embeddings", False),
        max_position_embeddings=keys.int("max_position_embeddings", 32768),
        layer_types=types, sliding_window=window,
    )
