"""LLaMA (and every checkpoint with ``model_type: llama``)."""

from __future__ import annotations

from typing import Any

from ....errors import ConfigError
from ..config.gguf_keys import (
    GGUF_BLOCK_NAMES,
    ROPE_FREQS,
    Metadata,
    gguf_dims,
    llama3_rope,
    scaled_rope,
)
from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish
from ..config.types import Activation, NormType, TransformerConfig, activation_from_hf


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "llama config")
    d = dims(keys)
    attention_bias = keys.bool("attention_bias", False)
    keys.expect("sliding_window", [None], "LLaMA has no sliding window")
    return finish(
        keys, model_type="llama", **d,
        norm_eps=keys.float("rms_norm_eps", 1e-6, positive=True),
        activation=activation_from_hf(keys.opt("hidden_act", "silu"), keys.where),
        qkv_bias=attention_bias, o_proj_bias=attention_bias,
        mlp_bias=keys.bool("mlp_bias", False),
        tie_word_embeddings=keys.bool("tie_word_embeddings", False),
        max_position_embeddings=keys.int("max_position_embeddings", 2048),
    )


def translate_gguf(file: Any) -> TransformerConfig:
    """The config of a llama GGUF header (see config.gguf_keys)."""
    meta = Metadata(file)
    d = gguf_dims(meta, file, None)
    rot = meta.int("rope.dimension_count", d["head_dim"])
    if rot != d["head_dim"]:
        raise ConfigError(f"{meta.where}: rope.dimension_count {rot} != head size "
                          f"{d['head_dim']}; partial rotary LLaMA models are not supported")
    max_pos = meta.int("context_length", 2048)
    theta = meta.float("rope.freq_base", 10_000.0, positive=True)
    if ROPE_FREQS in file.tensors:
        rope = llama3_rope(meta, file, theta, d["head_dim"])
    else:
        rope = scaled_rope(meta, theta, max_pos)
    return TransformerConfig(
        model_type="llama", **d,
        norm_type=NormType.RmsNorm,
        norm_eps=meta.float("attention.layer_norm_rms_epsilon", 1e-5, positive=True),
        activation=Activation.Silu,
        qkv_bias="blk.0.attn_q.bias" in file.tensors,
        o_proj_bias="blk.0.attn_output.bias" in file.tensors,
        mlp_bias="blk.0.ffn_down.bias" in file.tensors,
        tie_word_embeddings="output.weight" not in file.tensors,
        rope=rope, max_position_embeddings=max_pos,
    )


# llama.cpp's LLaMA tensor names: ``ffn_norm`` is HF's post_attention_layernorm.
GGUF_TENSOR_NAMES = {**GGUF_BLOCK_NAMES, "ffn_norm": "post_attention_layernorm"}


def gguf_permuted_heads(config: TransformerConfig, hf_name: str) -> int | None:
    """llama.cpp permutes LLaMA's Q (all heads) and K (KV heads) rows for its RoPE kernel."""
    if hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
        return config.num_attention_heads
    if hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
        return config.num_kv_heads
    return None


def gguf_consumed(file: Any) -> frozenset[str]:
    """Llama-3 ``rope_freqs`` is absorbed by the RoPE config, not loaded as a weight."""
    return frozenset({ROPE_FREQS}) if ROPE_FREQS in file.tensors else frozenset()
