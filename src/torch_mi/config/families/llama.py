"""LLaMA (and every checkpoint with ``model_type: llama``)."""

from __future__ import annotations

from ..hf_keys import HFKeys
from ..types import TransformerConfig, activation_from_hf
from ._common import dims, finish


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "llama config")
    d = dims(keys)
    attention_bias = keys.bool("attention_bias", False)
    keys.expect("sliding_window", [None], "LLaMA has no sliding window")
    return finish(
        keys, model_type="llama", **d,
        norm_eps=keys.float("rms_norm_eps", 1e-6),
        activation=activation_from_hf(keys.opt("hidden_act", "silu"), keys.where),
        qkv_bias=attention_bias, o_proj_bias=attention_bias,
        mlp_bias=keys.bool("mlp_bias", False),
        tie_word_embeddings=keys.bool("tie_word_embeddings", False),
        max_position_embeddings=keys.int("max_position_embeddings", 2048),
    )
