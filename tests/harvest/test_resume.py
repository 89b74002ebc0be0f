"""Resume after a kill, corrupted shards, bad input (typed errors, nothing lost), memory."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import textwrap

import pytest

import torch_mi as mi
from torch_mi.harvest import (
    ActivationStore,
    DatasetError,
    HarvestError,
    ManifestMismatchError,
    ShardCorruptError,
    harvest,
    inspect_harvest,
)
from torch_mi.harvest.shard import FAULT_MARKER_ENV, FAULT_SHARD_ENV

from .conftest import make_docs, write_jsonl

ARGS = dict(seq_len=16, batch_size=3, shard_tokens=16 * 4, progress=False)
POINTS = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]


def same_files(a, b) -> None:
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_killed_run_resumes_to_identical_output(tiny_path, corpus, tmp_path):
    data, out, ref = corpus / "docs.jsonl", tmp_path / "out", tmp_path / "ref"
    script = textwrap.dedent(f"""
        import torch_mi as mi
        from torch_mi.harvest import harvest
        m = mi.MIModel.from_pretrained({str(tiny_path)!r}, device="cpu")
        harvest(m, {str(data)!r}, {POINTS!r}, {str(out)!r}, **{ARGS!r})
    """)
    env = {**os.environ, FAULT_SHARD_ENV: "3", FAULT_MARKER_ENV: str(tmp_path / "marker")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert sorted(p.name for p in out.glob("shard-*")) == [f"shard-00000{i}.safetensors"
                                                           for i in range(3)]
    assert list(out.glob(".shard-000003.safetensors.tmp-*"))  # the shard in flight
    assert inspect_harvest(out)["status"] == "partial"
    model = mi.MIModel.from_pretrained(tiny_path, device="cpu")
    resumed = harvest(model, data, POINTS, out, **ARGS)
    assert resumed.skipped == 3 and resumed.written == len(resumed.manifest["shards"]) - 3
    harvest(model, data, POINTS, ref, **ARGS)
    same_files(out, ref)


def test_corrupted_shard_is_detected_and_recomputed(tiny, corpus, tmp_path):
    out = tmp_path / "h"
    first = harvest(tiny, corpus / "docs.jsonl", POINTS, out, **ARGS)
    victim = out / "shard-000001.safetensors"
    good = victim.read_bytes()
    broken = bytearray(good)
    broken[-5] ^= 0xFF
    victim.write_bytes(bytes(broken))
    assert inspect_harvest(out)["bad_shards"] == ["shard-000001.safetensors"]
    with pytest.raises(ShardCorruptError, match="checksum"):
        ActivationStore(out, verify=True)
    again = harvest(tiny, corpus / "docs.jsonl", POINTS, out, **ARGS)
    assert again.written == 1 and again.skipped == len(first.manifest["shards"]) - 1
    assert victim.read_bytes() == good
    assert inspect_harvest(out)["verified"]


def test_bad_inputs_raise_typed_errors_and_keep_existing_output(tiny, loaded, corpus, tmp_path):
    data = corpus / "docs.jsonl"
    with pytest.raises(DatasetError, match="does not exist"):
        harvest(tiny, tmp_path / "missing.txt", POINTS, tmp_path / "a", **ARGS)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not utf-8 \xc3")
    with pytest.raises(DatasetError, match="not UTF-8"):
        harvest(tiny, bad, POINTS, tmp_path / "a", **ARGS)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{oops\n')
    with pytest.raises(DatasetError, match="line 2"):
        harvest(tiny, bad_json, POINTS, tmp_path / "a", **ARGS)
    with pytest.raises(DatasetError, match="no string field 'body'"):
        harvest(tiny, data, POINTS, tmp_path / "a", text_field="body", **ARGS)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    with pytest.raises(DatasetError, match="no sequence"):
        harvest(tiny, empty, POINTS, tmp_path / "a", **ARGS)
    with pytest.raises(mi.HookError, match="no hook point 'blocks.7.hook_resid_post'"):
        harvest(tiny, data, ["blocks.7.hook_resid_post"], tmp_path / "a", **ARGS)
    with pytest.raises(mi.HookError, match="only \\[batch, seq"):
        harvest(tiny, data, ["blocks.0.attn.hook_scores"], tmp_path / "a", **ARGS)
    with pytest.raises(mi.InputError, match="positions"):
        harvest(tiny, data, POINTS, tmp_path / "a", positions="first", **ARGS)
    assert not (tmp_path / "a").exists()  # nothing was created by a failed call

    out = tmp_path / "kept"
    harvest(tiny, data, POINTS, out, **ARGS)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ManifestMismatchError, match=r"differs in model\."):
        harvest(loaded["qwen2"], data, POINTS, out, **ARGS)
    with pytest.raises(ManifestMismatchError, match="seq_len: 16 \\(existing\\) vs 8"):
        harvest(tiny, data, POINTS, out, **{**ARGS, "seq_len": 8})
    other = tmp_path / "other.jsonl"
    write_jsonl(other, make_docs(10, seed=9))
    with pytest.raises(ManifestMismatchError, match="dataset"):
        harvest(tiny, other, POINTS, out, **ARGS)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(HarvestError, match="no harvest"):
        ActivationStore(tmp_path / "nothing")
