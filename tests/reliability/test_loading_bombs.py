"""Catalogue: memory bombs. A config (or GGUF header) claiming a model far larger than its
checkpoint, or than the machine, is refused in well under a second, before anything big is
allocated, with the estimate (and what it was compared with) in the message."""

from __future__ import annotations

import json
import time

import psutil
import pytest

import torch_mi as mi
from tests.reliability.loading_micro import (
    STRING,
    U32,
    gguf_file,
    gguf_kv,
    gguf_micro_kvs,
    gguf_micro_tensors,
    micro_config,
    micro_tensors,
    write_folder,
)
from torch_mi.loading import preflight

GIB = 1024**3


def refused_fast(call, error: type[Exception], match: str, budget_s: float = 1.0,
                 rss_budget: int = 100 * 1024**2) -> None:
    """``call`` raises exactly ``error`` (matching ``match``) within ``budget_s`` seconds and
    without the process growing by more than ``rss_budget`` bytes."""
    process = psutil.Process()
    rss = process.memory_info().rss
    start = time.perf_counter()
    with pytest.raises(error, match=match) as caught:
        call()
    elapsed = time.perf_counter() - start
    assert type(caught.value) is error
    assert elapsed < budget_s, f"refusal took {elapsed:.2f} s"
    assert process.memory_info().rss - rss < rss_budget


@pytest.fixture
def folder_with(tmp_path):
    def make(**changes):
        folder = write_folder(tmp_path / "m")
        (folder / "config.json").write_text(json.dumps(micro_config(**changes)))
        return folder

    return make


@pytest.fixture
def free_memory(monkeypatch):
    """Pretend the machine has ``n`` bytes free, so the outcome does not depend on it."""
    def set_free(n: int) -> None:
        monkeypatch.setattr(preflight, "available_memory", lambda device: (n, "available RAM"))

    return set_free


def load(path, **options):
    return mi.MIModel.from_pretrained(path, device="cpu", **options)


def test_a_million_layers(folder_with, free_memory):
    """The issue's example: num_hidden_layers = 1_000_000 used to run for minutes."""
    free_memory(4 * GIB)
    folder = folder_with(num_hidden_layers=1_000_000)
    refused_fast(lambda: load(folder), mi.ConfigError,
                 r"num_layers=1000000.*implies 2,336,001,040 parameters, an estimated 8\.7 GiB "
                 r"in float32, but only 4\.0 GiB of available RAM is left")


def test_a_million_layers_on_a_big_machine(folder_with, free_memory):
    free_memory(1024 * GIB)
    folder = folder_with(num_hidden_layers=1_000_000)
    refused_fast(lambda: load(folder), mi.WeightError,
                 r"num_layers=1000000.*implies 2,336,001,040 parameters \(an estimated 8\.7 GiB "
                 r"in float32\) but the checkpoint holds only 5,712 values")


def test_hidden_size_of_a_billion(folder_with):
    """The issue's example: hidden_size = 10**9 used to die in the allocator (1 TB)."""
    folder = folder_with(hidden_size=10**9)
    refused_fast(lambda: load(folder), mi.ConfigError,
                 r"hidden_size=1000000000.*an estimated [\d.]+ (PiB|TiB) in float32")


def test_vocab_of_a_billion(folder_with, free_memory):
    free_memory(16 * GIB)
    folder = folder_with(vocab_size=10**9)
    refused_fast(lambda: load(folder), mi.ConfigError,
                 r"vocab_size=1000000000.*parameters, an estimated [\d.]+ GiB in float32")


def test_intermediate_size_of_a_billion(folder_with, free_memory):
    free_memory(16 * GIB)
    folder = folder_with(intermediate_size=10**9)
    refused_fast(lambda: load(folder), mi.ConfigError,
                 r"intermediate_size=1000000000.*an estimated [\d.]+ GiB")


def test_the_estimate_uses_the_requested_dtype(folder_with, free_memory):
    free_memory(GIB)
    folder = folder_with(hidden_size=1024 * 16, intermediate_size=4096)
    refused_fast(lambda: load(folder, dtype="bfloat16"), mi.ConfigError,
                 r"an estimated [\d.]+ GiB in bfloat16, but only 1\.0 GiB of available RAM")


def test_even_the_micro_model_is_refused_when_memory_is_gone(tmp_path, free_memory):
    free_memory(1024)
    refused_fast(lambda: load(write_folder(tmp_path / "m")), mi.ConfigError,
                 r"implies 5,712 parameters, an estimated 22\.3 KiB in float32, but only "
                 r"1\.0 KiB of available RAM is left; refused before allocating anything")


def test_deep_config_that_fits_in_memory_but_not_in_the_checkpoint(folder_with):
    """5000 layers of width 16 fit in RAM, but the checkpoint has 2: refused from the
    tensor index, before the weight map (ten entries per layer) is even built."""
    folder = folder_with(num_hidden_layers=5000)
    refused_fast(lambda: load(folder), mi.WeightError,
                 r"num_layers=5000.*implies 11,681,040 parameters \(an estimated 44\.6 MiB in "
                 r"float32\) but the checkpoint holds only 5,712 values; the config does not "
                 r"belong to these weights")


def test_wide_config_that_fits_in_memory_but_not_in_the_checkpoint(folder_with, free_memory):
    free_memory(1024 * GIB)
    folder = folder_with(hidden_size=65536)
    refused_fast(lambda: load(folder), mi.WeightError,
                 r"hidden_size=65536.*\(an estimated [\d.]+ GiB in float32\) but the checkpoint "
                 r"holds only 5,712 values")


def _gguf_claiming_50_gb(tmp_path) -> object:
    """A ~1 MB GGUF (micro tensors, 1 MB of description) whose header claims ~39 GB."""
    kvs = gguf_micro_kvs(**{"embedding_length": (U32, 32768),
                            "feed_forward_length": (U32, 65536)})
    kvs.append(gguf_kv("general.description", STRING, "x" * 1_000_000))
    path = tmp_path / "claims-50gb.gguf"
    path.write_bytes(gguf_file(kvs, gguf_micro_tensors()))
    assert 1_000_000 < path.stat().st_size < 1_200_000
    return path


def test_small_gguf_claiming_50_gb_on_a_16_gb_machine(tmp_path, free_memory):
    """The issue's example: it used to reserve ~7 GB before failing."""
    free_memory(16 * GIB)
    path = _gguf_claiming_50_gb(tmp_path)
    refused_fast(lambda: load(path), mi.ConfigError,
                 r"GGUF claims-50gb\.gguf \(llama\): the config \(num_layers=1, hidden_size=32768, "
                 r"intermediate_size=65536.*an estimated 3\d\.\d GiB in float32, but only 16\.0 "
                 r"GiB of available RAM")


def test_small_gguf_claiming_50_gb_on_a_1_tb_machine(tmp_path, free_memory):
    free_memory(1024 * GIB)
    path = _gguf_claiming_50_gb(tmp_path)
    refused_fast(lambda: load(path), mi.WeightError,
                 r"GGUF claims-50gb\.gguf \(llama\).*implies 9,\d{3},\d{3},\d{3} parameters "
                 r"\(an estimated 3\d\.\d GiB in float32\) but the checkpoint holds only "
                 r"17,\d{3} values")


def test_gguf_block_count_of_a_million(tmp_path, free_memory):
    free_memory(16 * GIB)
    kvs = gguf_micro_kvs(block_count=(U32, 1_000_000))
    path = tmp_path / "deep.gguf"
    path.write_bytes(gguf_file(kvs, gguf_micro_tensors()))
    refused_fast(lambda: load(path), mi.ConfigError,
                 r"num_layers=1000000.*an estimated [\d.]+ GiB in float32")


def test_big_models_compare_names_before_allocating(tmp_path, monkeypatch):
    """Above the cheap limit, a renamed tensor is reported from the index alone: the
    backend's allocator is never called."""
    from torch_mi.backends.transformer.model import GenericTransformer

    monkeypatch.setattr(preflight, "CHEAP_BYTES", 0)

    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated before the names were checked")

    monkeypatch.setattr(GenericTransformer, "empty", classmethod(no_allocation))
    tensors = micro_tensors()
    tensors["model.layers.1.mlp.up_projection.weight"] = tensors.pop(
        "model.layers.1.mlp.up_proj.weight")
    folder = write_folder(tmp_path / "m", tensors=tensors)
    refused_fast(lambda: load(folder), mi.WeightError,
                 r"(?s)missing tensors \(1\):\s+model\.layers\.1\.mlp\.up_proj\.weight.*unused "
                 r"checkpoint tensors \(1\):\s+model\.layers\.1\.mlp\.up_projection\.weight")


def test_the_parameter_estimate_is_exact_for_every_family():
    """The refusals compare num_parameters() with what a checkpoint holds, so it must never
    overestimate: for every tiny variant it equals the allocated model's parameter count."""
    import torch

    from tests.helpers.tiny_models import _configs
    from torch_mi.backends.registry import resolve_hf

    for variant, hf_config in _configs().items():
        row, config = resolve_hf(json.loads(hf_config.to_json_string()))
        model = row.backend.empty(config, "cpu", torch.float32)
        assert config.num_parameters() == sum(p.numel() for p in model.parameters()), variant


def test_the_estimate_matches_the_embedded_smollm2():
    model = mi.MIModel.from_pretrained()
    assert model.config.num_parameters() == sum(p.numel() for p in model.backend.parameters())
