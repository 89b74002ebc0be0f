"""Keeps the benchmark harness working: one quick run on a tiny model (timings not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_harness_run_writes_json_and_markdown(tiny_models, tmp_path):
    out, docs = tmp_path / "bench.json", tmp_path / "bench.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--model-dir",
         str(tiny_models["llama"].path), "--scenarios", "forward,capture,scaling,generation",
         "--out", str(out), "--docs", str(docs)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    assert [row["seq_len"] for row in data["forward"]] == [8, 32]
    for row in data["forward"]:
        assert row["torch-mi"]["n"] == 2 and row["ratio_vs_sdpa"] > 0
    assert data["capture"]["points"] == 2 * 29 + 5  # every point of the 2-layer GQA llama
    assert data["generation"]["same_tokens"] is True  # greedy tokens equal HF generate's
    text = docs.read_text()
    assert "## Targets" in text and "forward 128" not in text  # no 128-token row in --quick
