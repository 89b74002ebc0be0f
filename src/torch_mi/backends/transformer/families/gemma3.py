"""Gemma 3 (text): Gemma 2's sandwich norms plus QK-norm, no soft-caps by default, a
5-local/1-global layer pattern and one RoPE base per layer type (local 1e4, global 1e6)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ....errors import ConfigError
from ..config.checks import as_count
from ..config.gguf_keys import GGUF_BLOCK_NAMES, Metadata, gguf_dims, scaled_rope
from ..config.hf_keys import HFKeys, read_rope
from ..config.translate import dims, finish, layer_types, sliding_window
from ..config.types import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    Activation,
    NormType,
    RopeConfig,
    TransformerConfig,
    gemma_embedding_scale,
)
from .gemma2 import sandwich_fields

GLOBAL_THETA, LOCAL_THETA = 1_000_000.0, 10_000.0


def _ropes(keys: HFKeys, max_pos: int):
    """(global, local) RoPE in the nested per-layer-type form or the old flat form."""
    params = keys.hf.get("rope_parameters")
    if isinstance(params, dict) and (FULL_ATTENTION in params or SLIDING_ATTENTION in params):
        full, _ = read_rope(keys, max_pos, GLOBAL_THETA, FULL_ATTENTION)
        local, _ = read_rope(keys, max_pos, LOCAL_THETA, SLIDING_ATTENTION)
        keys.used.add("rope_local_base_freq")
        return full, local
    full, _ = read_rope(keys, max_pos, GLOBAL_THETA)
    local_theta = keys.float("rope_local_base_freq", LOCAL_THETA, positive=True)
    return full, RopeConfig(theta=local_theta)


def translate(hf: dict, model_type: str = "gemma3_text") -> TransformerConfig:
    keys = HFKeys(hf, f"{model_type} config")
    d = dims(keys, head_dim_default=256)
    if keys.hf.get("use_bidirectional_attention"):
        raise ConfigError(f"{keys.where}: bidirectional Gemma 3 (embedding models) is not a "
                          f"causal LM; only causal attention is supported")
    keys.used.add("use_bidirectional_attention")
    window = sliding_window(keys, 4096)
    pattern = keys.int("sliding_window_pattern", keys.int("_sliding_window_pattern", 6))
    if pattern == 0:
        raise ConfigError(f"{keys.where}: 'sliding_window_pattern' must be positive (every "
                          f"pattern-th layer is global), got 0")
    default = [SLIDING_ATTENTION if (i + 1) % pattern else FULL_ATTENTION
               for i in range(d["num_layers"])]
    max_pos = keys.int("max_position_embeddings", 131_072)
    full_rope, local_rope = _ropes(keys, max_pos)
    return finish(
        keys, model_type=model_type, **d, **sandwich_fields(keys, d),
        max_position_embeddings=max_pos,
        rope=full_rope, rope_local=local_rope,
        attn_logit_softcapping=keys.float("attn_logit_softcapping", None, positive=True),
        final_logit_softcapping=keys.float("final_logit_softcapping", None, positive=True),
        qk_norm=True,
        layer_types=layer_types(keys, d["num_layers"], window, default if window else None),
        sliding_window=window,
    )


def translate_multimodal(hf: dict) -> TransformerConfig:
    """``model_type: gemma3`` wraps the text config in ``text_config`` (vision is not loaded)."""
    text = hf.get("text_config")
    if not isinstance(text, dict):
        return translate(hf, model_type="gemma3")
    return translate({k: v for k, v in text.items() if k != "model_type"}, model_type="gemma3")


# Gemma 3 facts the GGUF does not carry (HF Gemma3TextConfig defaults).
GEMMA3_SLIDING_PERIOD = 6  # 5 sliding layers, then 1 full
GEMMA3_LOCAL_THETA = 10_000.0
GEMMA3_QUERY_SCALAR = 256.0  # query_pre_attn_scalar default
GEMMA3_27B_LAYERS = 62  # the one size whose query scale is hidden/heads


def _gemma3_layer_types(meta: Metadata, num_layers: int) -> tuple[str, ...]:
    """Per-layer pattern: the file's ``sliding_window_pattern`` (bool per layer, or a
    period) when present, else HF's default of 5 sliding layers then 1 full."""
    pattern = meta.get("attention.sliding_window_pattern")
    if isinstance(pattern, np.ndarray):
        if pattern.size != num_layers:
            raise ConfigError(f"{meta.where}: sliding_window_pattern has {pattern.size} entries "
                              f"for {num_layers} layers")
        return tuple(SLIDING_ATTENTION if bool(s) else FULL_ATTENTION for s in pattern)
    period = GEMMA3_SLIDING_PERIOD if pattern is None else as_count(
        pattern, f"{meta.arch}.attention.sliding_window_pattern", meta.where, minimum=1)
    return tuple(SLIDING_ATTENTION if (i + 1) % period else FULL_ATTENTION
                 for i in range(num_layers))


def translate_gguf(file: Any) -> TransformerConfig:
    """The config of a gemma3 GGUF header (see config.gguf_keys)."""
    meta = Metadata(file)
    d = gguf_dims(meta, file, 256)
    max_pos = meta.int("context_length", 131_072)
    full_rope = scaled_rope(meta, meta.float("rope.freq_base", 1_000_000.0, positive=True),
                            max_pos)
    local_rope = RopeConfig(theta=meta.float("rope.freq_base_swa", GEMMA3_LOCAL_THETA,
                                             positive=True))
    # Not in the GGUF. HF's default is 256, which every released size's config.json uses
    # except 27B (62 layers), whose config says hidden/heads = 168; llama.cpp applies the
    # same 27B rule, so we do too (transformers' GGUF loader would use 256 there).
    scalar = (d["hidden_size"] / d["num_attention_heads"] if d["num_layers"] == GEMMA3_27B_LAYERS
              else GEMMA3_QUERY_SCALAR)
    final_cap = meta.float("final_logit_softcapping", 0.0) or None
    attn_cap = meta.float("attn_logit_softcapping", 0.0) or None
    return TransformerConfig(
        model_type="gemma3_text", **d,
        norm_type=NormType.GemmaRmsNorm,
        norm_eps=meta.float("attention.layer_norm_rms_epsilon", 1e-6, positive=True),
        activation=Activation.GeluApprox,
        embedding_scale=gemma_embedding_scale(d["hidden_size"]),
        tie_word_embeddings="output.weight" not in file.tensors,
        rope=full_rope, rope_local=local_rope, max_position_embeddings=max_pos,
        attn_logit_softcapping=attn_cap, final_logit_softcapping=final_cap,
        query_pre_attn_scalar=scalar, use_post_norms=True, qk_norm=True,
        layer_types=_gemma3_layer_types(meta, d["num_layers"]),
        sliding_window=meta.int("attention.sliding_window", 4096),
    )


# llama.cpp's Gemma 3 tensor names: ``ffn_norm`` is HF's pre_feedforward_layernorm.
GGUF_TENSOR_NAMES = {
    **GGUF_BLOCK_NAMES, "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
