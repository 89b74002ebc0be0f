"""Catalogue: hostile sharded checkpoints (index JSON + shards). The index comes from the
internet: it must not make the loader read files outside the model folder, and the index
and the shards must agree tensor by tensor."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from safetensors.torch import save_file

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from tests.reliability.loading_micro import micro_tensors, refused_without_blocking, write_folder

INDEX = "model.safetensors.index.json"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def write_sharded(folder):
    """The micro checkpoint in two shards with its index; returns the weight map."""
    write_folder(folder)
    (folder / "model.safetensors").unlink()
    tensors = micro_tensors()
    weight_map = {name: SHARDS[i % 2] for i, name in enumerate(sorted(tensors))}
    for shard in SHARDS:
        save_file({n: t for n, t in tensors.items() if weight_map[n] == shard}, folder / shard)
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return weight_map


@pytest.fixture
def sharded(tmp_path):
    folder = tmp_path / "m"
    write_sharded(folder)
    return folder


def load(folder):
    return mi.MIModel.from_pretrained(folder, device="cpu")


def edit_index(folder, edit) -> None:
    index = json.loads((folder / INDEX).read_text())
    edit(index)
    (folder / INDEX).write_text(json.dumps(index))


def test_the_sharded_micro_checkpoint_loads(sharded):
    assert load(sharded).num_layers == 2


def test_index_entry_climbing_out_of_the_folder(sharded, tmp_path):
    """The issue's example: ../outside.safetensors used to be followed."""
    shutil.copy(sharded / SHARDS[0], tmp_path / "outside.safetensors")
    edit_index(sharded, lambda i: i["weight_map"].update(
        {n: "../outside.safetensors" for n, s in i["weight_map"].items() if s == SHARDS[0]}))
    with raises_exactly(mi.WeightError, match=r"names shard '\.\./outside\.safetensors', a path "
                                              r"outside the model folder"):
        load(sharded)


def test_index_entry_with_an_absolute_path(sharded, tmp_path):
    target = str(tmp_path / "abs.safetensors")
    shutil.copy(sharded / SHARDS[0], target)
    edit_index(sharded, lambda i: i["weight_map"].update(
        {n: target for n, s in i["weight_map"].items() if s == SHARDS[0]}))
    with raises_exactly(mi.WeightError, match=rf"names shard '{target}', a path outside"):
        load(sharded)


def test_index_entry_through_a_subfolder_and_back_out(sharded):
    edit_index(sharded, lambda i: i["weight_map"].update(
        {n: f"sub/../../{SHARDS[0]}" for n, s in i["weight_map"].items() if s == SHARDS[0]}))
    with raises_exactly(mi.WeightError, match=r"names shard 'sub/\.\./\.\./model-00001.*outside"):
        load(sharded)


def test_index_entry_with_a_backslash_path(sharded):
    edit_index(sharded, lambda i: i["weight_map"].update(
        {n: "..\\evil.safetensors" for n, s in i["weight_map"].items() if s == SHARDS[0]}))
    with raises_exactly(mi.WeightError, match=r"names shard '\.\.\\\\evil\.safetensors'"):
        load(sharded)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_shard_that_is_a_symlink_out_of_the_folder(sharded, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(sharded / SHARDS[1], outside)
    (sharded / SHARDS[1]).symlink_to(outside)
    with raises_exactly(mi.WeightError, match=rf"names shard '{SHARDS[1]}', which resolves "
                                              rf"\(through a symlink\) to .*elsewhere"):
        load(sharded)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_hugging_face_cache_symlinks_into_blobs_still_load(tmp_path):
    """Hub snapshots link every file to ../../blobs/<hash>: that store is allowed."""
    repo = tmp_path / "models--org--micro"
    source = tmp_path / "src"
    write_sharded(source)
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for item in source.iterdir():
        blob = repo / "blobs" / f"blob-{item.name}"
        shutil.copy(item, blob)
        (snapshot / item.name).symlink_to(os.path.relpath(blob, snapshot))
    assert load(snapshot).num_layers == 2


def test_weight_map_that_is_a_list(sharded):
    edit_index(sharded, lambda i: i.update(weight_map=list(i["weight_map"])))
    with raises_exactly(mi.WeightError, match=r"'weight_map' must map tensor names to shard files "
                                              r"\(got list\)"):
        load(sharded)


def test_index_that_is_a_json_list(sharded):
    (sharded / INDEX).write_text("[1, 2]")
    with raises_exactly(mi.WeightError, match=r"'weight_map' must map.*\(got NoneType\)"):
        load(sharded)


def test_index_that_is_not_json(sharded):
    (sharded / INDEX).write_text("{weight_map: }")
    with raises_exactly(mi.WeightError, match=r"shard index .*index\.json is not valid JSON"):
        load(sharded)


def test_shard_entry_that_is_a_number(sharded):
    edit_index(sharded, lambda i: i["weight_map"].update({"model.norm.weight": 7}))
    with raises_exactly(mi.WeightError, match=r"tensor 'model\.norm\.weight' maps to 7"):
        load(sharded)


def test_shard_entry_that_is_empty(sharded):
    edit_index(sharded, lambda i: i["weight_map"].update({"model.norm.weight": ""}))
    with raises_exactly(mi.WeightError, match=r"tensor 'model\.norm\.weight' maps to ''"):
        load(sharded)


def test_index_puts_a_tensor_in_the_wrong_shard(sharded):
    weight_map = json.loads((sharded / INDEX).read_text())["weight_map"]
    wrong = SHARDS[1] if weight_map["model.norm.weight"] == SHARDS[0] else SHARDS[0]
    edit_index(sharded, lambda i: i["weight_map"].update({"model.norm.weight": wrong}))
    with raises_exactly(mi.WeightError, match=rf"puts tensor 'model\.norm\.weight' in {wrong}"):
        load(sharded)


def test_shard_holds_a_tensor_the_index_does_not_list(sharded):
    edit_index(sharded, lambda i: i["weight_map"].pop("model.norm.weight"))
    with raises_exactly(mi.WeightError, match=r"holds tensor 'model\.norm\.weight', which "
                                              r"model\.safetensors\.index\.json does not list"):
        load(sharded)


def test_index_lists_a_tensor_no_shard_has(sharded):
    edit_index(sharded, lambda i: i["weight_map"].update({"model.layers.7.ghost.weight": SHARDS[0]}))
    with raises_exactly(mi.WeightError, match=r"no shard contains.*model\.layers\.7\.ghost"):
        load(sharded)


def test_missing_shard(sharded):
    (sharded / SHARDS[1]).unlink()
    with raises_exactly(mi.WeightError, match=rf"lists shard\(s\) \['{SHARDS[1]}'\] that are not"):
        load(sharded)


def test_tensor_in_two_shards(sharded):
    tensors = micro_tensors()
    save_file({"model.norm.weight": tensors["model.norm.weight"],
               "model.embed_tokens.weight": tensors["model.embed_tokens.weight"]},
              sharded / SHARDS[0])
    save_file(tensors, sharded / SHARDS[1])
    with raises_exactly(mi.WeightError, match=r"tensor '.*' appears in both"):
        load(sharded)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_index_that_is_a_fifo(sharded):
    (sharded / INDEX).unlink()
    os.mkfifo(sharded / INDEX)
    refused_without_blocking(lambda: load(sharded), mi.WeightError,
                             r"shard index .*index\.json is a FIFO \(named pipe\)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_shard_that_is_a_fifo(sharded):
    (sharded / SHARDS[0]).unlink()
    os.mkfifo(sharded / SHARDS[0])
    refused_without_blocking(lambda: load(sharded), mi.WeightError,
                             rf"{SHARDS[0]} is a FIFO \(named pipe\), not a regular file")
