"""Session fixtures: tiny random HF models (built once) and their torch-mi loads."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(min(2, torch.get_num_threads()))

import torch_mi as mi  # noqa: E402
from tests.helpers.tiny_models import SEED_FAMILIES, VARIANTS, TinyModel, build_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_models(tiny_root) -> dict[str, TinyModel]:
    """Every variant, built lazily on first use and kept for the session."""

    class Lazy(dict):
        def __missing__(self, key):
            self[key] = build_tiny(key, tiny_root)
            return self[key]

    return Lazy()


@pytest.fixture(scope="session")
def loaded(tiny_models) -> dict[str, mi.MIModel]:
    class Lazy(dict):
        def __missing__(self, key):
            self[key] = mi.MIModel.from_pretrained(tiny_models[key].path, device="cpu")
            return self[key]

    return Lazy()


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture(params=SEED_FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def smollm2() -> mi.MIModel:
    """The embedded SmolLM2-135M-Instruct, loaded once per session (modules that define
    their own ``smollm2`` fixture keep it)."""
    return mi.MIModel.from_pretrained(device="cpu")
