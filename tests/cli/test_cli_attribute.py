"""``torch-mi attribute`` on the circuit-tracer golden Llama and CLT: the saved full graph
equals circuit-tracer's adjacency (same run settings), the Neuronpedia JSON reads back with
every field checked, the viewer page is written; bad input fails with one line."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from torch_mi.attribution import Graph
from torch_mi.attribution.neuronpedia import load_neuronpedia_json
from torch_mi.cli.main import main

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "circuit_tracer_attribution"


def test_attribute_writes_graph_json_and_html(capsys, tmp_path):
    out = tmp_path / "g.json"
    argv = ["attribute", "--model", str(GOLDEN / "model"), "--transcoders", str(GOLDEN / "clt"),
            "--prompt", "<s>The cat", "--out", str(out), "--html", str(tmp_path / "g.html"),
            "--max-n-logits", "5", "--desired-logit-prob", "0.8", "--batch-size", "16",
            "--device", "cpu", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    _same_nodes_and_links_as_circuit_tracer(out)
    graph = Graph.load(tmp_path / "g.graph")
    gold = load_file(str(GOLDEN / "clt_full.safetensors"))
    assert graph.input_tokens.tolist() == gold["input_tokens"].tolist()  # "<s>The cat": BOS given as text
    assert_close(graph.adjacency_matrix, gold["adjacency_matrix"], rtol=1e-4,
                 atol=1e-5 * float(gold["adjacency_matrix"].abs().max()))
    doc = load_neuronpedia_json(out)
    assert len(doc.prompt_tokens) == len(gold["input_tokens"])
    assert result["kept_nodes"] == int(gold["node_mask"].sum())
    assert (tmp_path / "g.html").read_text().startswith("<!DOCTYPE html>")
    assert torch.isfinite(graph.adjacency_matrix).all()


def test_attribute_bad_input(capsys, tmp_path):
    base = ["attribute", "--model", str(GOLDEN / "model"), "--device", "cpu"]
    assert main([*base, "--transcoders", str(tmp_path / "none"), "--prompt", "x",
                 "--out", str(tmp_path / "g.json")]) == 1
    assert "none" in capsys.readouterr().err
    assert main([*base, "--transcoders", str(GOLDEN / "clt"), "--prompt", "The cat",
                 "--out", str(tmp_path / "g.txt")]) == 1
    assert ".json" in capsys.readouterr().err
    assert main([*base, "--transcoders", str(GOLDEN / "gemma3_plt"), "--prompt", "The cat",
                 "--out", str(tmp_path / "g.json"), "--node-threshold", "2"]) == 1
    assert "node-threshold" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def _same_nodes_and_links_as_circuit_tracer(out: Path) -> None:
    """Same nodes and links as circuit-tracer's create_graph_files on the same graph."""
    ours = json.loads(out.read_text())
    theirs = json.loads((GOLDEN / "neuronpedia" / "clt_full.json").read_text())
    assert [n["node_id"] for n in ours["nodes"]] == [n["node_id"] for n in theirs["nodes"]]
    assert [(x["source"], x["target"]) for x in ours["links"]] == \
        [(x["source"], x["target"]) for x in theirs["links"]]
    assert_close(torch.tensor([x["weight"] for x in ours["links"]]),
                 torch.tensor([x["weight"] for x in theirs["links"]]), rtol=1e-4, atol=1e-4)
