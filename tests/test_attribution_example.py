"""examples/attribution_graph.py runs offline on the embedded SmolLM2 with per-layer
transcoders fitted on the fly, and writes files that our readers accept: the full graph
(Graph.load), the Neuronpedia JSON (load_neuronpedia_json), the viewer page; its scores
are shares in [0, 1] and agree with the ones recomputed from the saved graph."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torch_mi.attribution import Graph, compute_graph_scores
from torch_mi.attribution.neuronpedia import load_neuronpedia_json

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "attribution_graph.py"
GOLDEN = Path(__file__).resolve().parent / "golden" / "circuit_tracer_attribution"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True,
                          text=True, timeout=300, env=env or ENV, cwd=EXAMPLE.parent)
    assert (done.returncode == 0) == ok, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("attribution_example")
    done = run("--offline-fit", "--out", str(out), "--features", "16",
               "--max-feature-nodes", "48", "--batch-size", "24")
    return out, done.stdout


def test_prints_path_features_edges_and_scores(result):
    _, stdout = result
    assert "path: per-layer transcoders fitted on the fly for the embedded SmolLM2" in stdout
    assert re.search(r"top \d+ of \d+ kept features", stdout)
    assert re.search(r"top \d+ of \d+ kept edges", stdout)
    assert "logit targets ' Paris'" in stdout  # the model's top prediction is the first target
    scores = re.search(r"replacement score (\d\.\d+), completeness score (\d\.\d+)", stdout)
    assert scores and all(0.0 <= float(s) <= 1.0 for s in scores.groups())


def test_files_load_with_our_readers(result):
    out, _ = result
    graph = Graph.load(out / "graph.graph")
    assert graph.n_features == 48 and graph.n_layers == 30
    summary = json.loads((out / "summary.json").read_text())
    replacement, completeness = compute_graph_scores(graph)
    assert summary["replacement_score"] == pytest.approx(replacement, abs=1e-6)
    assert summary["completeness_score"] == pytest.approx(completeness, abs=1e-6)
    assert 0.0 <= replacement <= 1.0 and 0.0 <= completeness <= 1.0
    assert 0 < summary["kept_nodes"] <= graph.n_nodes
    np_graph = load_neuronpedia_json(out / "graph.json")
    kinds = {node["feature_type"] for node in np_graph.nodes}
    assert {"embedding", "logit", "cross layer transcoder"} <= kinds
    assert len(np_graph.metadata["prompt_tokens"]) == graph.n_pos
    html = (out / "graph.html").read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "graph-data" in html


def test_bad_option_fails_with_a_typed_error(tmp_path):
    done = run("--offline-fit", "--out", str(tmp_path), "--features", "4",
               "--max-feature-nodes", "0", ok=False)
    assert "InputError" in done.stderr and "max_feature_nodes" in done.stderr
    assert not (tmp_path / "graph.json").exists()


def fake_snapshot(cache: Path, repo_id: str, source: Path) -> None:
    """``source``'s files as the cached main snapshot of ``repo_id`` (HF cache layout)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def test_real_path_when_both_repos_are_cached(tmp_path):
    """The real-CLT branch, run on stand-ins: the golden tiny Llama and CLT cached under
    the Gemma-2-2B and CLT repo names in a private HF cache."""
    cache = tmp_path / "hub"
    fake_snapshot(cache, "google/gemma-2-2b", GOLDEN / "model")
    fake_snapshot(cache, "mntss/clt-gemma-2-2b-426k", GOLDEN / "clt")
    out = tmp_path / "out"
    done = run("--out", str(out), env={**ENV, "HF_HUB_CACHE": str(cache)})
    assert "path: real cross-layer transcoders mntss/clt-gemma-2-2b-426k" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["path"] == "real"
    assert Graph.load(out / "graph.graph").n_layers == 3
    load_neuronpedia_json(out / "graph.json")
