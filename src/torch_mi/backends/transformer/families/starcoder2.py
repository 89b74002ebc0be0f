"""StarCoder2: LayerNorm, plain GELU MLP (c_fc/c_proj), biases everywhere, tied head."""

from __future__ import annotations

from ..config.hf_keys import HFKeys
from ..config.translate import dims, finish, layer_types, sliding_window
from ..config.types import MlpLayout, NormType, TransformerConfig, activation_from_hf


def translate(hf: dict) -> TransformerConfig:
    keys = HFKeys(hf, "starcoder2 config")
    d = dims(keys)
    bias = keys.bool("use_bias", True)
    window = sliding_window(keys)
    return finish(
        keys, model_type="starcoder2", **d,
        norm_type=NormType.LayerNorm,
        norm_eps=keys.float("norm_epsilon", 1e-5, positive=True),
        activation=activation_from_hf(keys.opt("hidden_act", "gelu_pytorch_tanh"), keys.where),
        mlp_layout=MlpLayout.Plain,
        qkv_bias=bias, o_proj_bias=bias, mlp_bias=bias,
        tie_word_embeddings=keys.bool("tie_word_embeddings", True),
        max_position_embeddings=keys.int("max_position_embeddings", 4096),
        layer_types=layer_types(keys, d["num_layers"], window), sliding_window=window,
    )
