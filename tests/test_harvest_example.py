"""examples/harvest_and_probe.py runs offline on the embedded SmolLM2 over the corpus that
ships with scikit-learn, writes a verified store, and its probes beat the majority
baseline on the token's own digit feature."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "harvest_and_probe.py"


def test_harvest_and_probe(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=EXAMPLE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"harvested 3072 tokens of \d+ files into \d+ shards", done.stdout)
    summary = json.loads((tmp_path / "harvest_and_probe.json").read_text())
    assert [row["layer"] for row in summary["probes"]] == [2, 6, 10]
    baseline = float(re.search(r"majority (\d\.\d+)", done.stdout).group(1))
    assert all(row["this_token_test"] > baseline for row in summary["probes"])
    assert (tmp_path / "harvest_descr" / "manifest.json").is_file()
