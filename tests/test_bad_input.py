"""Each kind of bad input gets its own typed, actionable error (one test per row)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import torch_mi as mi


@pytest.fixture
def llama_copy(tiny_models, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_models["llama"].path, dst)
    return dst


def test_unknown_hook_string_suggests_the_close_match(tiny_models, loaded):
    spec = mi.HookSpec().capture("blocks.1.hook_resid_pots")
    with pytest.raises(mi.HookError, match="Did you mean 'blocks.1.hook_resid_post'"):
        loaded["llama"].forward(tiny_models["llama"].input_ids, spec)


def test_layer_out_of_range(tiny_models, loaded):
    spec = mi.HookSpec().capture(mi.HookPoint.ResidPost(2))
    with pytest.raises(mi.HookError, match=r"layer 2 is out of range; this model has 2 layers"):
        loaded["llama"].forward(tiny_models["llama"].input_ids, spec)


def test_replace_of_the_wrong_shape(tiny_models, loaded):
    spec = mi.HookSpec().intervene(mi.HookPoint.ResidPost(0), mi.Intervention.Replace(
        torch.zeros(2, 20, 63)))
    with pytest.raises(mi.InterventionError,
                       match=r"blocks.0.hook_resid_post.*\[2, 20, 63\].*\[2, 20, 64\]"):
        loaded["llama"].forward(tiny_models["llama"].input_ids, spec)


def test_missing_config_json(llama_copy):
    (llama_copy / "config.json").unlink()
    with pytest.raises(mi.ConfigError, match="no config.json"):
        mi.MIModel.from_pretrained(llama_copy, device="cpu")


def test_unknown_rope_scaling_type(llama_copy):
    cfg = json.loads((llama_copy / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "ntk-by-parts", "rope_theta": 10000.0, "factor": 2.0}
    (llama_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(mi.ConfigError, match="RoPE scaling type 'ntk-by-parts' is not supported"):
        mi.MIModel.from_pretrained(llama_copy, device="cpu")


def _rewrite_weights(path, edit):
    weights = load_file(path / "model.safetensors")
    edit(weights)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor(llama_copy):
    _rewrite_weights(llama_copy, lambda w: w.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(mi.WeightError, match=r"missing tensors \(1\):\s+model.layers.1.mlp.up_proj"):
        mi.MIModel.from_pretrained(llama_copy, device="cpu")


def test_extra_tensor(llama_copy):
    _rewrite_weights(llama_copy, lambda w: w.update({"model.layers.0.extra.weight": torch.ones(3)}))
    with pytest.raises(mi.WeightError, match=r"unused checkpoint tensors \(1\):\s+model.layers.0.extra"):
        mi.MIModel.from_pretrained(llama_copy, device="cpu")


def test_shape_mismatch(llama_copy):
    def shrink(w):
        w["model.layers.0.self_attn.k_proj.weight"] = w["model.layers.0.self_attn.k_proj.weight"][:16]
    _rewrite_weights(llama_copy, shrink)
    with pytest.raises(mi.WeightError,
                       match=r"k_proj.weight: checkpoint \[16, 64\], model expects \[32, 64\]"):
        mi.MIModel.from_pretrained(llama_copy, device="cpu")


def test_all_problems_are_listed_in_one_error(llama_copy):
    def break_three_ways(w):
        w.pop("model.norm.weight")
        w["bogus"] = torch.ones(1)
        w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][:, :32].contiguous()
    _rewrite_weights(llama_copy, break_three_ways)
    with pytest.raises(mi.WeightError) as info:
        mi.MIModel.from_pretrained(llama_copy, device="cpu")
    text = str(info.value)
    assert "model.norm.weight" in text and "bogus" in text and "embed_tokens" in text


def test_sharded_index_pointing_to_a_missing_shard(llama_copy):
    weights = load_file(llama_copy / "model.safetensors")
    names = sorted(weights)
    half = len(names) // 2
    save_file({n: weights[n] for n in names[:half]}, llama_copy / "model-00001-of-00002.safetensors")
    (llama_copy / "model.safetensors").unlink()
    index = {"weight_map": {n: ("model-00001-of-00002.safetensors" if i < half
                                else "model-00002-of-00002.safetensors")
                            for i, n in enumerate(names)}}
    (llama_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(mi.WeightError, match=r"model-00002-of-00002.safetensors.*not in"):
        mi.MIModel.from_pretrained(llama_copy, device="cpu")


def test_token_id_outside_the_vocabulary(loaded):
    with pytest.raises(mi.InputError, match=r"token id 256 at position \[0, 2\].*0..255"):
        loaded["llama"].forward(torch.tensor([[5, 6, 256, 7]]))


def test_negative_token_id(loaded):
    with pytest.raises(mi.InputError, match="token id -1"):
        loaded["llama"].forward([3, -1])


def test_empty_input(loaded):
    with pytest.raises(mi.InputError, match="empty input"):
        loaded["llama"].forward(torch.zeros(1, 0, dtype=torch.long))


def test_float_input_ids(loaded):
    with pytest.raises(mi.InputError, match="integer token ids"):
        loaded["llama"].forward(torch.zeros(1, 3))


def test_bad_attention_mask_shape(tiny_models, loaded):
    ids = tiny_models["llama"].input_ids
    with pytest.raises(mi.InputError, match=r"attention_mask has shape \[2, 5\], expected \[2, 20\]"):
        loaded["llama"].forward(ids, attention_mask=torch.ones(2, 5))


def test_local_path_that_does_not_exist(tmp_path):
    with pytest.raises(mi.ConfigError, match="does not exist"):
        mi.MIModel.from_pretrained(tmp_path / "nope", device="cpu")


def test_unknown_dtype_and_device(llama_copy):
    with pytest.raises(mi.ConfigError, match="unsupported dtype"):
        mi.MIModel.from_pretrained(llama_copy, dtype="int8")
    with pytest.raises(mi.ConfigError, match="unknown device"):
        mi.MIModel.from_pretrained(llama_copy, device="tpu")


def test_offline_hub_miss_is_a_download_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(mi.DownloadError, match="not in the local Hugging Face cache"):
        mi.download_model_blocking("nobody/no-such-model")
