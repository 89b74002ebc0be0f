"""Family translators: every axis lands where HF puts it; unknown keys are errors."""

from __future__ import annotations

import json

import pytest

import torch_mi as mi
from torch_mi.backends.transformer.config import FULL_ATTENTION as FULL
from torch_mi.backends.transformer.config import SLIDING_ATTENTION as SLIDE


def hf_config(tiny_models, variant) -> dict:
    return json.loads((tiny_models[variant].path / "config.json").read_text())


def test_supported_model_types():
    assert mi.SUPPORTED_MODEL_TYPES == ("gemma", "gemma2", "gemma3", "gemma3_text", "llama",
                                        "mistral", "phi3", "qwen2", "qwen3", "rwkv6", "rwkv7",
                                        "starcoder2")


def test_llama(tiny_models):
    c = mi.from_hf_config(hf_config(tiny_models, "llama3"))
    assert (c.norm_type, c.activation, c.qkv_layout, c.mlp_layout) == (
        mi.NormType.RmsNorm, mi.Activation.Silu, mi.QkvLayout.Separate,
        mi.MlpLayout.GatedSeparate)
    assert c.qkv_bias and c.o_proj_bias and c.mlp_bias and not c.tie_word_embeddings
    assert c.rope.rope_type == "llama3" and c.rope.factor == 8.0
    assert c.rope.original_max_position_embeddings == 16
    assert c.layer_types == (FULL, FULL) and c.sliding_window is None


def test_qwen2_windows_only_from_max_window_layers(tiny_models):
    c = mi.from_hf_config(hf_config(tiny_models, "qwen2"))
    assert c.qkv_bias and not c.o_proj_bias and not c.mlp_bias
    assert c.layer_types == (FULL, SLIDE) and c.sliding_window == 8
    raw = hf_config(tiny_models, "qwen2")
    del raw["layer_types"]
    raw["use_sliding_window"] = False
    off = mi.from_hf_config(raw)
    assert off.layer_types == (FULL, FULL) and off.sliding_window is None


def test_gemma(tiny_models):
    c = mi.from_hf_config(hf_config(tiny_models, "gemma"))
    assert c.norm_type is mi.NormType.GemmaRmsNorm and c.activation is mi.Activation.GeluApprox
    assert c.embedding_scale == pytest.approx(8.0) and c.tie_word_embeddings
    assert (c.num_kv_heads, c.head_dim) == (1, 32)
    legacy = {**hf_config(tiny_models, "gemma"), "hidden_act": "gelu"}
    assert mi.from_hf_config(legacy).activation is mi.Activation.GeluApprox


def test_gemma2(tiny_models):
    c = mi.from_hf_config(hf_config(tiny_models, "gemma2"))
    assert c.use_post_norms and c.attn_logit_softcapping == 50.0
    assert c.final_logit_softcapping == 30.0 and c.query_pre_attn_scalar == 16.0
    assert c.attention_scale == pytest.approx(0.25)
    assert c.layer_types == (SLIDE, FULL) and c.alternating_sliding_window
    raw = hf_config(tiny_models, "gemma2")
    del raw["layer_types"], raw["attn_logit_softcapping"]
    c = mi.from_hf_config(raw)
    assert c.layer_types == (SLIDE, FULL) and c.attn_logit_softcapping == 50.0  # HF defaults
    assert mi.from_hf_config({**raw, "final_logit_softcapping": None}).final_logit_softcapping is None


def test_phi3(tiny_models):
    c = mi.from_hf_config(hf_config(tiny_models, "phi3_longrope"))
    assert c.qkv_layout is mi.QkvLayout.Fused and c.mlp_layout is mi.MlpLayout.GatedFused
    assert c.partial_rotary_factor == 0.5 and c.rotary_dim == 8
    assert c.rope.rope_type == "longrope" and c.rope.long_factor == (1.0, 2.0, 4.0, 9.0)
    assert mi.from_hf_config(hf_config(tiny_models, "phi3")).layer_types == (SLIDE, SLIDE)


def test_starcoder2(tiny_models):
    c = mi.from_hf_config(hf_config(tiny_models, "starcoder2"))
    assert c.norm_type is mi.NormType.LayerNorm and c.mlp_layout is mi.MlpLayout.Plain
    assert c.qkv_bias and c.o_proj_bias and c.mlp_bias and c.tie_word_embeddings
    assert c.norm_eps == 1e-5 and c.layer_types == (SLIDE, SLIDE)


def test_mistral_default_window_is_hf_s(tiny_models):
    raw = hf_config(tiny_models, "mistral")
    assert mi.from_hf_config(raw).sliding_window == 8
    del raw["sliding_window"]
    assert mi.from_hf_config(raw).sliding_window == 4096
    with pytest.raises(mi.ConfigError, match="layer_types"):
        mi.from_hf_config({**raw, "layer_types": ["full_attention"] * 2})


def test_unexpected_architecture_key_is_an_error(tiny_models):
    raw = {**hf_config(tiny_models, "llama"), "num_experts": 8}
    with pytest.raises(mi.ConfigError, match=r"unexpected config keys \['num_experts'\]"):
        mi.from_hf_config(raw)


def test_harmless_keys_are_accepted(tiny_models):
    raw = {**hf_config(tiny_models, "llama"), "attention_dropout": 0.1, "pretraining_tp": 1,
           "auto_map": {"AutoModel": "x.Y"}, "some_future_key": None}
    mi.from_hf_config(raw)


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "intermediate_size", "vocab_size"])
def test_missing_required_field(tiny_models, field):
    raw = hf_config(tiny_models, "llama")
    del raw[field]
    with pytest.raises(mi.ConfigError, match=f"missing or invalid required field '{field}'"):
        mi.from_hf_config(raw)


def test_unknown_and_missing_model_type(tiny_models):
    with pytest.raises(mi.ConfigError, match="unsupported model_type 'gpt2'"):
        mi.from_hf_config({**hf_config(tiny_models, "llama"), "model_type": "gpt2"})
    with pytest.raises(mi.ConfigError, match="no 'model_type'"):
        mi.from_hf_config({"hidden_size": 4})


def test_invalid_head_grouping_and_layer_types(tiny_models):
    with pytest.raises(mi.ConfigError, match="multiple of num_key_value_heads"):
        mi.from_hf_config({**hf_config(tiny_models, "llama"), "num_key_value_heads": 3})
    with pytest.raises(mi.ConfigError, match="layer_types has 1 entries"):
        mi.from_hf_config({**hf_config(tiny_models, "qwen2"), "layer_types": ["full_attention"]})


def test_old_style_rope_keys(tiny_models):
    raw = hf_config(tiny_models, "llama")
    del raw["rope_parameters"]
    raw["rope_theta"] = 500000.0
    raw["rope_scaling"] = {"type": "linear", "factor": 2.0}
    c = mi.from_hf_config(raw)
    assert c.rope_theta == 500000.0 and c.rope.rope_type == "linear" and c.rope.factor == 2.0


def test_parameter_count_matches_the_checkpoint(variant, loaded):
    model = loaded[variant]
    assert model.config.num_parameters() == sum(p.numel() for p in model.backend.parameters())


def test_config_classmethods_are_the_translators(tiny_models):
    raw = hf_config(tiny_models, "gemma2")
    assert mi.TransformerConfig.from_hf_config(raw) == mi.from_hf_config(raw)
    names = ["model.layers.0.mlp.gate_proj.weight"]
    assert mi.TransformerConfig.from_hf_config_auto(raw, names) == mi.from_hf_config(raw)
