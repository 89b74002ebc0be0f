"""RWKV config translation (inventory §5.1 defaults and LoRA rules) and strict weight
accounting through MIModel.from_pretrained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import torch_mi as mi
from torch_mi.backends import resolve_hf
from torch_mi.backends.rwkv import GenericRwkv, RwkvVersion, translate_rwkv6, translate_rwkv7

V6 = {"model_type": "rwkv6", "hidden_size": 2048, "num_hidden_layers": 24, "vocab_size": 65536,
      "num_attention_heads": 64, "head_size": 64, "attention_hidden_size": 2048,
      "intermediate_size": None, "layer_norm_epsilon": 1e-5, "head_size_divisor": 8,
      "rescale_every": 6, "tie_word_embeddings": False, "use_cache": True, "bos_token_id": 0}
V7 = {"model_type": "rwkv7", "hidden_size": 2048, "num_hidden_layers": 24, "vocab_size": 65536,
      "head_dim": 64, "num_heads": 32, "norm_eps": 1e-5, "norm_bias": True, "fuse_norm": False,
      "attn_mode": "chunk", "hidden_act": "sqrelu", "hidden_ratio": 4.0, "attn": None,
      "max_position_embeddings": 2048, "value_dim": [2048] * 24}


def test_rwkv6_defaults():
    c = translate_rwkv6(V6)
    assert c.version is RwkvVersion.V6 and c.version.value == "RWKV-6 (Finch)"
    assert (c.head_dim, c.num_heads, c.intermediate_size) == (64, 32, 7168)
    assert (c.lora_dims.time_mix_extra_dim, c.lora_dims.time_decay_extra_dim) == (32, 64)
    assert c.group_norm_eps() == pytest.approx(6.4e-4) and c.rescale_every == 6
    only_heads = {k: v for k, v in V6.items() if k != "head_size"}  # the upstream reading
    assert translate_rwkv6(only_heads).head_dim == 64
    big = translate_rwkv6({**V6, "hidden_size": 4096, "attention_hidden_size": 4096})
    assert (big.lora_dims.time_mix_extra_dim, big.lora_dims.time_decay_extra_dim) == (64, 128)


def test_rwkv7_defaults_and_fla_lora_rule():
    c = translate_rwkv7(V7)
    assert c.version is RwkvVersion.V7 and c.num_heads == 32
    assert c.intermediate_size == 8192 and c.group_norm_eps() == pytest.approx(64e-5)
    # max(32, round(scale*sqrt(2048)*factor/32)*32): 2.5 -> 128, 1.7 -> 64, gate 5.0 -> 224
    assert (c.lora_dims.decay, c.lora_dims.a, c.lora_dims.v, c.lora_dims.gate) == (
        128, 128, 64, 224)
    given = translate_rwkv7({**V7, "decay_low_rank_dim": 96, "a_low_rank_dim": 96,
                             "v_low_rank_dim": 64, "gate_low_rank_dim": 256})
    assert (given.lora_dims.decay, given.lora_dims.gate) == (96, 256)
    small = translate_rwkv7({**V7, "hidden_size": 128, "head_dim": 32, "num_heads": 4,
                             "value_dim": None})
    assert small.lora_dims.decay == 32 and small.group_norm_eps() == pytest.approx(32e-5)


@pytest.mark.parametrize(("base", "change", "match"), [
    (V6, {"time_mix_whatever": 3}, "unexpected config keys"),
    (V6, {"head_size": 0}, "head_size' must be positive"),
    (V6, {"head_size": 48, "num_attention_heads": 48}, "not a multiple"),
    (V6, {"num_attention_heads": 7}, "neither the head size"),
    (V6, {"attention_hidden_size": 1024}, "attention_hidden_size"),
    (V6, {"hidden_size": None}, "hidden_size"),
    (V7, {"head_dim": 0}, "head_dim' must be positive"),
    (V7, {"num_heads": 16}, "num_heads 16"),
    (V7, {"hidden_act": "gelu"}, "hidden_act"),
    (V7, {"value_dim": 1024}, "value_dim"),
    (V7, {"norm_eps": -1.0}, "norm_eps"),
    (V7, {"attn": {"layers": [1]}}, "hybrid"),
])
def test_bad_configs_are_config_errors(base, change, match):
    with pytest.raises(mi.ConfigError, match=match):
        resolve_hf({**base, **change})


def test_an_unknown_model_type_is_a_config_error():
    with pytest.raises(mi.ConfigError, match="rwkv6, rwkv7"):
        resolve_hf({**V7, "model_type": "rwkv8"}, None)


def test_num_parameters_is_the_model_size(rwkv):
    backend = rwkv.model.backend
    count = sum(p.numel() for p in backend.parameters())
    assert backend.config.num_parameters() == count
    assert count == sum(t.numel() for t in rwkv.tensors.values())


def _copy(rwkv, tmp_path, edit_tensors=None, edit_config=None):
    tensors = load_file(rwkv.folder / "model.safetensors")
    config = json.loads((rwkv.folder / "config.json").read_text())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_a_stray_tensor_is_a_weight_error_naming_it(rwkv, tmp_path):
    folder = _copy(rwkv, tmp_path, lambda t: t.__setitem__("stray.weight", torch.zeros(2)))
    with pytest.raises(mi.WeightError, match="stray.weight"):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_a_missing_tensor_is_a_weight_error_naming_it(rwkv, tmp_path):
    name = ("rwkv.blocks.1.attention.time_faaaa" if rwkv.version == "v6"
            else "model.layers.1.attn.v_lora.lora.2.bias")
    folder = _copy(rwkv, tmp_path, lambda t: t.pop(name))
    with pytest.raises(mi.WeightError, match=name.replace(".", r"\.")):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_a_layer0_value_lora_is_refused_on_rwkv7(rwkv_models, tmp_path):
    rwkv = rwkv_models["v7"]
    extra = "model.layers.0.attn.v_lora.lora.2.bias"
    folder = _copy(rwkv, tmp_path, lambda t: t.__setitem__(extra, torch.zeros(256)))
    with pytest.raises(mi.WeightError, match=extra.replace(".", r"\.")):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_a_wrong_shape_is_a_weight_error(rwkv, tmp_path):
    name = ("rwkv.blocks.0.attention.time_maa_w1" if rwkv.version == "v6"
            else "model.layers.0.attn.w_lora.lora.0.weight")
    folder = _copy(rwkv, tmp_path, lambda t: t.__setitem__(name, t[name][:-1].contiguous()))
    with pytest.raises(mi.WeightError, match="shape mismatches"):
        mi.MIModel.from_pretrained(folder, device="cpu")


def test_a_tied_head_loads_from_the_embedding(rwkv, tmp_path):
    head = "head.weight" if rwkv.version == "v6" else "lm_head.weight"
    embed = "rwkv.embeddings.weight" if rwkv.version == "v6" else "model.embeddings.weight"
    folder = _copy(rwkv, tmp_path, lambda t: t.pop(head),
                   lambda c: c.__setitem__("tie_word_embeddings", True))
    model = mi.MIModel.from_pretrained(folder, device="cpu")
    backend = model.backend
    assert isinstance(backend, GenericRwkv) and backend.head.weight is backend.embed.weight
    torch.testing.assert_close(backend.head.weight, rwkv.tensors[embed])
    assert backend.config.num_parameters() == sum(p.numel() for p in backend.parameters())
    shutil.rmtree(folder)
