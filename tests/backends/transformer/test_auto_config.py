"""Auto-config equals the family translators; the compatibility report diagnoses the rest."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import torch_mi as mi
from torch_mi.backends.transformer.config import auto_config, check_auto_compatibility
from torch_mi.loading.safetensors_io import tensor_names_from_safetensors


def renamed(tiny, new_type):
    raw = json.loads((tiny.path / "config.json").read_text())
    names = tensor_names_from_safetensors(tiny.path / "model.safetensors")
    return raw, {**raw, "model_type": new_type}, names


def test_auto_config_equals_the_family_translator(family, tiny_models):
    raw, unknown, names = renamed(tiny_models[family], f"custom_{family}")
    manual = mi.from_hf_config(raw)
    auto, _ = auto_config(unknown, names)
    assert auto == manual.replace(model_type=f"custom_{family}")


def test_renamed_family_loads_and_matches_hf(family, tiny_models, tmp_path):
    import shutil

    tiny = tiny_models[family]
    shutil.copytree(tiny.path, tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    raw["model_type"] = f"my_{family}"
    (tmp_path / "m" / "config.json").write_text(json.dumps(raw))
    model = mi.MIModel.from_pretrained(tmp_path / "m", device="cpu")
    with torch.no_grad():
        ref = tiny.hf(tiny.input_ids).logits
    torch.testing.assert_close(model.forward(tiny.input_ids).output(), ref, atol=1e-5, rtol=1e-5)


def test_gpt_neox_naming_is_diagnosed(tmp_path):
    config = {"model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4,
              "num_hidden_layers": 2, "intermediate_size": 128, "vocab_size": 256}
    tensors = {"gpt_neox.embed_in.weight": torch.zeros(256, 64),
               "gpt_neox.layers.0.attention.query_key_value.weight": torch.zeros(192, 64),
               "gpt_neox.layers.0.input_layernorm.weight": torch.zeros(64),
               "gpt_neox.final_layer_norm.weight": torch.zeros(64),
               "embed_out.weight": torch.zeros(256, 64)}
    report = check_auto_compatibility(config, tensors)
    assert not report.compatible
    assert any("GPT-NeoX / Pythia" in issue for issue in report.issues)
    assert any("final_layer_norm" in issue for issue in report.issues)  # found-tensor hint
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(mi.ConfigError, match="GPT-NeoX / Pythia naming convention"):
        mi.MIModel.from_pretrained(tmp_path, device="cpu")


@pytest.mark.parametrize(("prefix", "family"), [("transformer.h.0.attn.c_attn.weight", "GPT-2"),
                                                ("transformer.h.0.self_attention.x", "GPT-2"),
                                                ("transformer.layer.0.x", "BLOOM"),
                                                ("transformer.blocks.0.x", "Falcon / MPT")])
def test_other_conventions(prefix, family):
    config = {"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1,
              "intermediate_size": 8, "vocab_size": 8}
    report = check_auto_compatibility(config, [prefix])
    assert any(family in issue for issue in report.issues)


def test_misspelt_tensor_gets_a_did_you_mean(tiny_models):
    _, unknown, names = renamed(tiny_models["llama"], "custom")
    names = [n.replace("layers.0.input_layernorm", "layers.0.input_layernrom") for n in names]
    report = check_auto_compatibility(unknown, names)
    assert not report.compatible
    text = str(report)
    assert "did you mean 'model.layers.0.input_layernrom.weight'" in text


def test_missing_fields_are_each_reported(tiny_models):
    _, unknown, names = renamed(tiny_models["llama"], "custom")
    for key in ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
        del unknown[key]
    report = check_auto_compatibility(unknown, names)
    assert sum("missing or invalid required field" in i for i in report.issues) == 4


def test_standard_names_pass_and_unread_keys_are_noted(tiny_models):
    _, unknown, names = renamed(tiny_models["llama"], "custom")
    report = check_auto_compatibility({**unknown, "exotic_flag": True}, names)
    assert report.compatible
    assert any("exotic_flag" in note for note in report.notes)
    report.into_result()


def test_missing_lm_head_with_untied_config(tiny_models):
    _, unknown, names = renamed(tiny_models["llama"], "custom")
    report = check_auto_compatibility(unknown, [n for n in names if n != "lm_head.weight"])
    assert report.issues == ["'lm_head.weight' not found but tie_word_embeddings is false"]
    with pytest.raises(mi.ConfigError, match="not compatible"):
        report.into_result()
