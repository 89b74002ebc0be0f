"""Ray engine: byte-identical to the local engine, also after a worker is killed mid-run.
One module-scoped local cluster (2 CPUs) serves every test."""

from __future__ import annotations

import filecmp
import os

import pytest

from torch_mi.harvest import harvest
from torch_mi.harvest.shard import FAULT_MARKER_ENV, FAULT_SHARD_ENV

ray = pytest.importorskip("ray")

ARGS = dict(seq_len=16, batch_size=3, shard_tokens=16 * 16, progress=False)
POINTS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def same_files(a, b) -> None:
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_ray_output_is_byte_identical_and_survives_a_killed_worker(cluster, tiny, sae, corpus,
                                                                    tmp_path):
    data = corpus / "docs.jsonl"
    local = harvest(tiny, data, POINTS, tmp_path / "local", dictionaries=[sae], top_k=3, **ARGS)
    assert len(local.manifest["shards"]) >= 4
    # fault injection in the workers only: SIGKILL the actor writing shard 2, once
    faults = {FAULT_SHARD_ENV: "2", FAULT_MARKER_ENV: str(tmp_path / "killed-once")}
    res = harvest(tiny, data, POINTS, tmp_path / "ray", dictionaries=[sae], top_k=3,
                  engine="ray", ray_options={"num_workers": 2,
                                             "runtime_env": {"env_vars": faults}}, **ARGS)
    assert (tmp_path / "killed-once").exists()  # a worker really died at shard 2
    assert res.written == len(local.manifest["shards"])
    same_files(tmp_path / "local", tmp_path / "ray")


def test_worker_with_other_weights_is_refused(cluster, tiny_path, corpus, tmp_path):
    import torch

    import torch_mi as mi
    from torch_mi.harvest import ManifestMismatchError

    edited = mi.MIModel.from_pretrained(tiny_path, device="cpu")
    with torch.no_grad():
        next(edited.backend.parameters()).add_(1.0)  # the driver's weights no longer match
    with pytest.raises(ManifestMismatchError, match="weight hash"):
        harvest(edited, corpus / "docs.jsonl", POINTS, tmp_path / "x", engine="ray",
                ray_options={"num_workers": 1}, **ARGS)
    assert not (tmp_path / "x").exists()


def test_ray_missing_is_a_typed_error(tiny, corpus, tmp_path, monkeypatch):
    import builtins

    from torch_mi.harvest import EngineUnavailableError

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(EngineUnavailableError, match=r"pip install 'torch-mi\[ray\]'"):
        harvest(tiny, corpus / "docs.jsonl", POINTS, tmp_path / "x", engine="ray", **ARGS)
    assert not (tmp_path / "x").exists()
