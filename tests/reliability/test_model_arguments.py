"""Device and dtype arguments: refused before anything is read or allocated."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from torch_mi.model import resolve_device, resolve_dtype


@pytest.mark.parametrize(("device", "match"), [
    (3, "device must be a string or torch.device, got 3"),
    (1.5, "device must be a string or torch.device"),
    ("tpu", "unknown device 'tpu'"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("", "unknown device ''"),
])
def test_bad_devices(device, match):
    with raises_exactly(mi.ConfigError, match=match):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_without_cuda_is_refused_naming_the_device(tiny_models):
    with raises_exactly(mi.ConfigError, match="'cuda:1' requested but CUDA is not available"):
        mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA machine")
def test_cuda_index_beyond_the_devices_is_refused():
    with raises_exactly(mi.ConfigError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize(("dtype", "match"), [
    ("int8", "unsupported dtype 'int8'"),
    (torch.int64, "unsupported dtype torch.int64"),
    ("float64", "unsupported dtype 'float64'"),
    (32, "unsupported dtype 32"),
])
def test_bad_dtypes(dtype, match):
    with raises_exactly(mi.ConfigError, match=match):
        resolve_dtype(dtype)


def test_a_refused_argument_reads_nothing(tmp_path):
    """The device is checked before the path: a missing folder is not even looked at."""
    with raises_exactly(mi.ConfigError, match="unknown device 'tpu'"):
        mi.MIModel.from_pretrained(tmp_path / "does-not-exist", device="tpu")
