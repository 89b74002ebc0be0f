"""examples/rwkv_inference.py runs in its tiny mode (a random RWKV built on the fly) for both
versions and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rwkv_inference.py"


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_example_tiny_mode(version):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLE), "--tiny", "--version", version,
                           "--max-new-tokens", "8"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"MIModel(rwkv{version[1]}, layers=3, hidden=128, vocab=320" in out
    assert "blocks.2.rwkv.hook_state: [1, 4, 32, 32]" in out
    assert "blocks.2.rwkv.hook_decay: [1, 22, 4, 32]" in out  # 22 byte tokens in the prompt
    assert "cached state == recompute: True" in out
    assert "state knockout of token 0 at every layer: KL" in out


def test_example_refuses_a_bad_model_path():
    done = subprocess.run([sys.executable, str(EXAMPLE), "--model", "/no/such/model.pth"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode != 0 and "Error" in done.stderr
