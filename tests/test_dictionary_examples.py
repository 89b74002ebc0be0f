"""examples/sae_encoding.py, clt_injection.py and feature_ablation.py run offline on the
embedded SmolLM2 with dictionaries fitted and written on the fly, and print what they
promise (format agreement, strength-0 and inactive-feature no-ops)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(name: str, *args: str, ok: bool = True) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=300, env=ENV, cwd=EXAMPLES)
    assert (done.returncode == 0) == ok, done.stderr[-2000:]
    return done.stdout if ok else done.stderr


def test_sae_encoding_every_format(tmp_path):
    out = run("sae_encoding.py", "--out", str(tmp_path), "--d-sae", "256")
    for fmt in ("SAELens folder: relu", "Gemma Scope params.npz: jumprelu",
                "sparsify folder (TopK k=8): topk"):
        assert fmt in out
    assert "SAELens ReLU == Gemma Scope JumpReLU (threshold 0): True" in out
    counts = re.search(r"sparsify active per position: \[([\d, ]+)\]", out).group(1)
    assert all(int(c) <= 8 for c in counts.split(","))
    assert (tmp_path / "sae_encoding.json").is_file()


def test_clt_injection():
    out = run("clt_injection.py")
    assert "CrossLayerTranscoder(clt_split, layers=30, d_model=576, features/layer=16" in out
    assert "features writing most along ' blue' at layer 29 (cosine)" in out
    kl = float(re.search(r"KL (\d+\.\d+); logit of ' blue'", out).group(1))
    assert kl > 1e-3
    assert "strength 0 is a no-op: True" in out


def test_feature_ablation():
    out = run("feature_ablation.py")
    assert "P(' Paris') = 0.7" in out
    kls = [float(k) for k in re.findall(r"\(act [\d.]+\): KL (\d+\.\d+)", out)]
    assert len(kls) == 3 and all(k > 0 for k in kls)
    assert re.search(r"\(inactive\): KL 0\.00000", out)
    assert "ablating an inactive feature is a no-op: True" in out


def test_feature_ablation_refuses_a_missing_sae():
    err = run("feature_ablation.py", "--sae", "/no/such/sae", ok=False)
    assert "does not exist" in err
