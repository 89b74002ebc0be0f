"""Gemma: (1 + w) RMSNorm in fp32, sqrt(D) embedding scale, tanh-GELU, tied head."""

from __future__ import annotations

from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish
from ..config.types import (
    Activation,
    NormType,
    TransformerConfig,
    activation_from_hf,
    gemma_embedding_scale,
)


def gemma_activation(keys: HFKeys) -> Activation:
    """HF maps Gemma's legacy ``hidden_act: gelu`` to the tanh approximation."""
    name = keys.opt("hidden_act", "gelu_pytorch_tanh")
    keys.opt("hidden_activation")  # read by old releases; HF's Gemma ignores it
    return Activation.GeluApprox if name == "gelu" else activation_from_hf(name, keys.where)


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "gemma config")
    d = dims(keys, head_dim_default=256)
    attention_bias = keys.bool("attention_bias", False)
    keys.expect("use_bidirectional_attention", [None, False], "only causal attention is supported")
    return finish(
        keys, model_type="gemma", **d,
        norm_type=NormType.GemmaRmsNorm,
        norm_eps=keys.float("rms_norm_eps", 1e-6, positive=True),
        activation=gemma_activation(keys),
        qkv_bias=attention_bias, o_proj_bias=attention_bias,
        embedding_scale=gemma_embedding_scale(d["hidden_size"]),
        tie_word_embeddings=keys.bool("tie_word_embeddings", True),
        max_position_embeddings=keys.int("max_position_embeddings", 8192),
    )
