"""Mistral: LLaMA with a sliding window on every layer (HF default window 4096)."""

from __future__ import annotations

from ....errors import ConfigError
from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish, layer_types, sliding_window
from ..config.types import TransformerConfig, activation_from_hf


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "mistral config")
    d = dims(keys)
    if keys.has("layer_types"):
        raise ConfigError(
            "mistral config: 'layer_types' is not part of Mistral (HF ignores it and warns); "
            "alternating attention belongs to Ministral checkpoints"
        )
    window = sliding_window(keys, 4096)
    return finish(
        keys, model_type="mistral", **d,
        norm_eps=keys.float("rms_norm_eps", 1e-6, positive=True),
        activation=activation_from_hf(keys.opt("hidden_act", "silu"), keys.where),
        tie_word_embeddings=keys.bool("tie_word_embeddings", False),
        max_position_embeddings=keys.int("max_position_embeddings", 4096 * 32),
        layer_types=layer_types(keys, d["num_layers"], window), sliding_window=window,
    )
