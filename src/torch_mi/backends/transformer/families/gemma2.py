"""Gemma 2: Gemma plus sandwich norms, soft-caps, query_pre_attn_scalar and alternating
sliding-window layers (even layers slide in HF)."""

from __future__ import annotations

from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish, layer_types, nullable, sliding_window
from ..config.types import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    NormType,
    TransformerConfig,
    activation_from_hf,
    gemma_embedding_scale,
)


def sandwich_fields(keys: HFKeys, d: dict) -> dict:
    """What Gemma 2 and Gemma 3 share: (1 + w) norms in fp32 before and after each sublayer,
    sqrt(D) embedding scale, tanh-GELU, tied head, query_pre_attn_scalar."""
    attention_bias = keys.bool("attention_bias", False)
    keys.opt("hidden_act")  # legacy duplicate of hidden_activation; HF ignores it
    return dict(
        norm_type=NormType.GemmaRmsNorm,
        norm_eps=keys.float("rms_norm_eps", 1e-6, positive=True),
        activation=activation_from_hf(keys.opt("hidden_activation", "gelu_pytorch_tanh"),
                                      keys.where),
        qkv_bias=attention_bias, o_proj_bias=attention_bias,
        embedding_scale=gemma_embedding_scale(d["hidden_size"]),
        tie_word_embeddings=keys.bool("tie_word_embeddings", True),
        query_pre_attn_scalar=float(keys.float("query_pre_attn_scalar", 256.0, positive=True)),
        use_post_norms=True,
    )


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "gemma2 config")
    d = dims(keys, head_dim_default=256)
    keys.expect("use_bidirectional_attention", [None, False], "only causal attention is supported")
    window = sliding_window(keys, 4096)
    alternating = [SLIDING_ATTENTION if i % 2 == 0 else FULL_ATTENTION
                   for i in range(d["num_layers"])]
    return finish(
        keys, model_type="gemma2", **d, **sandwich_fields(keys, d),
        max_position_embeddings=keys.int("max_position_embeddings", 8192),
        attn_logit_softcapping=nullable(keys, "attn_logit_softcapping", 50.0),
        final_logit_softcapping=nullable(keys, "final_logit_softcapping", 30.0),
        layer_types=layer_types(keys, d["num_layers"], window,
                                alternating if window else None),
        sliding_window=window,
    )
