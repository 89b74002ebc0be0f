"""Safetensors loading: sharded checkpoints, dtype conversion, tied heads, peak memory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import torch_mi as mi
from torch_mi.loading.safetensors_io import (
    SafetensorsSource,
    tensor_names_from_index,
    tensor_names_from_safetensors,
)


def shard(path, n_shards: int) -> None:
    weights = load_file(path / "model.safetensors")
    names = sorted(weights)
    files = [f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)]
    weight_map = {}
    for i, name in enumerate(names):
        weight_map[name] = files[i % n_shards]
    for f in files:
        save_file({n: weights[n] for n in names if weight_map[n] == f}, path / f)
    (path / "model.safetensors").unlink()
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_sharded_checkpoint_loads_identically(tiny_models, tmp_path):
    tiny = tiny_models["qwen2"]
    shutil.copytree(tiny.path, tmp_path / "m")
    shard(tmp_path / "m", 3)
    single = mi.MIModel.from_pretrained(tiny.path, device="cpu").forward(tiny.input_ids).output()
    sharded = mi.MIModel.from_pretrained(tmp_path / "m", device="cpu")
    assert torch.equal(sharded.forward(tiny.input_ids).output(), single)
    names = tensor_names_from_index(tmp_path / "m" / "model.safetensors.index.json")
    assert names == tensor_names_from_safetensors(tiny.path / "model.safetensors")


def test_index_listing_a_tensor_no_shard_has(tiny_models, tmp_path):
    shutil.copytree(tiny_models["llama"].path, tmp_path / "m")
    shard(tmp_path / "m", 2)
    index_path = tmp_path / "m" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.9.ghost.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(mi.WeightError, match="no shard contains.*ghost"):
        mi.MIModel.from_pretrained(tmp_path / "m", device="cpu")


def test_bf16_checkpoint_converts_to_fp32(tiny_models, tmp_path):
    tiny = tiny_models["llama"]
    shutil.copytree(tiny.path, tmp_path / "m")
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(tiny.path / "model.safetensors").items()}
    save_file(weights, tmp_path / "m" / "model.safetensors")
    model = mi.MIModel.from_pretrained(tmp_path / "m", device="cpu")
    assert model.dtype == torch.float32
    embed = model.backend.embed.weight
    torch.testing.assert_close(embed, weights["model.embed_tokens.weight"].float(), atol=0, rtol=0)


def test_tied_checkpoint_with_an_identical_lm_head_is_accepted(tiny_models, tmp_path):
    tiny = tiny_models["starcoder2"]  # tied
    shutil.copytree(tiny.path, tmp_path / "m")
    weights = load_file(tiny.path / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
    save_file(weights, tmp_path / "m" / "model.safetensors")
    model = mi.MIModel.from_pretrained(tmp_path / "m", device="cpu")
    assert model.backend.unembed.weight is model.backend.embed.weight
    weights["lm_head.weight"] += 1.0
    save_file(weights, tmp_path / "m" / "model.safetensors")
    with pytest.raises(mi.WeightError, match="differs from it; set tie_word_embeddings to false"):
        mi.MIModel.from_pretrained(tmp_path / "m", device="cpu")


def test_rotary_inv_freq_buffers_are_ignored(tiny_models, tmp_path):
    tiny = tiny_models["llama"]
    shutil.copytree(tiny.path, tmp_path / "m")
    weights = load_file(tiny.path / "model.safetensors")
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(weights, tmp_path / "m" / "model.safetensors")
    mi.MIModel.from_pretrained(tmp_path / "m", device="cpu")


def test_phi3_fused_weights_fill_the_fused_parameter(tiny_models, loaded):
    weights = load_file(tiny_models["phi3"].path / "model.safetensors")
    attn = loaded["phi3"].backend.blocks[1].attn
    assert torch.equal(attn.qkv.weight, weights["model.layers.1.self_attn.qkv_proj.weight"])
    mlp = loaded["phi3"].backend.blocks[1].mlp
    assert torch.equal(mlp.gate_up.weight, weights["model.layers.1.mlp.gate_up_proj.weight"])


def test_separate_projections_are_stacked_q_k_v(tiny_models, loaded):
    weights = load_file(tiny_models["llama"].path / "model.safetensors")
    qkv = loaded["llama"].backend.blocks[0].attn.qkv.weight
    expected = torch.cat([weights[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])
    assert torch.equal(qkv, expected)


def test_source_reads_zero_copy_views(tiny_models):
    with SafetensorsSource.from_directory(tiny_models["llama"].path) as source:
        view = source.read("model.norm.weight")
        ref = load_file(tiny_models["llama"].path / "model.safetensors")["model.norm.weight"]
        assert torch.equal(view, ref)
        del view


def test_non_safetensors_folder_is_refused(tmp_path, tiny_models):
    shutil.copy(tiny_models["llama"].path / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(mi.WeightError, match="never pickles"):
        mi.MIModel.from_pretrained(tmp_path, device="cpu")
