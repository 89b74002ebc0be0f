"""Gemma 3 (text): Gemma 2's sandwich norms plus QK-norm, no soft-caps by default, a
5-local/1-global layer pattern and one RoPE base per layer type (local 1e4, global 1e6)."""

from __future__ import annotations

from ...errors import ConfigError
from ..hf_keys import HFKeys, read_rope
from ..types import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    TransformerConfig,
)
from ._common import dims, finish, layer_types, nullable
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
    local_theta = keys.float("rope_local_base_freq", LOCAL_THETA)
    from ..types import RopeConfig

    return full, RopeConfig(theta=local_theta)


def translate(hf: dict, model_type: str = "gemma3_text") -> TransformerConfig:
    keys = HFKeys(hf, f"{model_type} config")
    d = dims(keys, head_dim_default=256)
    if keys.hf.get("use_bidirectional_attention"):
        raise ConfigError(f"{keys.where}: bidirectional Gemma 3 (embedding models) is not a "
                          f"causal LM; only causal attention is supported")
    keys.used.add("use_bidirectional_attention")
    window = nullable(keys, "sliding_window", 4096)
    pattern = keys.int("sliding_window_pattern", keys.int("_sliding_window_pattern", 6))
    default = [SLIDING_ATTENTION if (i + 1) % pattern else FULL_ATTENTION
               for i in range(d["num_layers"])]
    max_pos = keys.int("max_position_embeddings", 131_072)
    full_rope, local_rope = _ropes(keys, max_pos)
    return finish(
        keys, model_type=model_type, **d, **sandwich_fields(keys, d),
        max_position_embeddings=max_pos,
        rope=full_rope, rope_local=local_rope,
        attn_logit_softcapping=keys.float("attn_logit_softcapping", None),
        final_logit_softcapping=keys.float("final_logit_softcapping", None),
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
