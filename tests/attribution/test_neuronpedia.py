"""Neuronpedia graph JSON: ours equals circuit-tracer's own ``create_graph_files`` output.

The inputs are circuit-tracer's graph tensors (adjacency, active/selected features, pruning
masks ...) stored in tests/golden/circuit_tracer_attribution/ by
tests/oracles/circuit_tracer_attribution_golden.py, and the JSON it wrote for them. Nothing
in those files is time- or process-dependent (string scans, no timestamps), so every field
is compared: metadata and qParams exactly, nodes and links as multisets (floats to 1e-5).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from torch_mi.attribution.neuronpedia import (
    GraphExport,
    NeuronpediaFormatError,
    load_neuronpedia_json,
    to_neuronpedia_json,
)
from torch_mi.errors import InputError, MIError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "circuit_tracer_attribution"
META = json.loads((GOLDEN / "meta.json").read_text())
RUNS = sorted(META["runs"])
N_LAYERS = 3


def golden_export(run: str) -> GraphExport:
    t = load_file(str(GOLDEN / f"{run}.safetensors"))
    tok = Tokenizer.from_file(str(GOLDEN / "model" / "tokenizer.json"))
    meta = META["runs"][run]
    return GraphExport(
        adjacency=t["adjacency_matrix"], active_features=t["active_features"],
        activation_values=t["activation_values"], selected_features=t["selected_features"],
        input_tokens=t["input_tokens"], logit_targets=t["logit_targets"],
        logit_probabilities=t["logit_probabilities"], n_layers=N_LAYERS,
        node_mask=t["node_mask"], edge_mask=t["edge_mask"],
        cumulative_scores=t["cumulative_scores"],
        prompt_tokens=[tok.decode([i], skip_special_tokens=False)
                       for i in t["input_tokens"].tolist()],
        logit_token_strings=meta["logit_token_strings"], prompt=meta["input_string"],
        slug=run, scan=meta["scan"], node_threshold=meta["prune"]["node_threshold"])


def _node_key(n: dict) -> tuple:
    return (n["node_id"], n["feature_type"])


def assert_same_nodes(ours: list[dict], theirs: list[dict]) -> None:
    assert Counter(map(_node_key, ours)) == Counter(map(_node_key, theirs))
    for a, b in zip(sorted(ours, key=_node_key), sorted(theirs, key=_node_key), strict=True):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(b[k], float):
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-5), (a["node_id"], k)
            else:
                assert a[k] == b[k], (a["node_id"], k)


def assert_same_links(ours: list[dict], theirs: list[dict]) -> None:
    def key(link):
        return (link["source"], link["target"], link["weight"])

    assert len(ours) == len(theirs)
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key), strict=True):
        assert (a["source"], a["target"]) == (b["source"], b["target"])
        assert a["weight"] == pytest.approx(b["weight"], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("run", RUNS)
def test_export_equals_circuit_tracer_create_graph_files(run: str, tmp_path):
    theirs = json.loads((GOLDEN / "neuronpedia" / f"{run}.json").read_text())
    ours = to_neuronpedia_json(golden_export(run), tmp_path / "out" / f"{run}.json")
    assert ours["metadata"] == theirs["metadata"]
    assert ours["qParams"] == theirs["qParams"]
    assert_same_nodes(ours["nodes"], theirs["nodes"])
    assert_same_links(ours["links"], theirs["links"])
    # the written file round-trips through the checked reader
    back = load_neuronpedia_json(tmp_path / "out" / f"{run}.json")
    assert back.to_dict() == json.loads(json.dumps(ours))


@pytest.mark.parametrize("run", RUNS)
def test_reader_accepts_circuit_tracer_files(run: str):
    g = load_neuronpedia_json(GOLDEN / "neuronpedia" / f"{run}.json")
    assert len(g.nodes) == len({(n["node_id"], n["feature_type"]) for n in g.nodes})
    assert g.prompt_tokens[0] == "<s>" and len(g.prompt_tokens) == len(META["tokens"])
    # circuit-tracer names error nodes 0_{layer}_{pos}: clt_full has a layer-0 feature 1 at
    # position 7 and the layer-1 error at position 7, both "0_1_7"
    assert g.duplicate_ids == (("0_1_7",) if run == "clt_full" else ())


@pytest.mark.parametrize("run", RUNS)
def test_torch_mi_attribution_exports_circuit_tracer_json(run: str):
    """End to end: our attribute() + prune_graph() on the golden model and transcoders,
    exported here, give circuit-tracer's own JSON (same nodes and links, weights close)."""
    import torch_mi as mi
    from torch_mi.attribution import attribute, prune_graph

    info = META["runs"][run]
    model = mi.MIModel.from_pretrained(GOLDEN / "model", device="cpu")
    graph = attribute(model, torch.tensor(META["tokens"]), str(GOLDEN / info["transcoders"]),
                      **info["attribute_kwargs"])
    pruned = prune_graph(graph, **info["prune"])
    export = GraphExport.from_graph(graph, pruned, golden_export(run).prompt_tokens, slug=run,
                                    scan=info["scan"], node_threshold=0.8)
    ours = to_neuronpedia_json(export)
    theirs = json.loads((GOLDEN / "neuronpedia" / f"{run}.json").read_text())
    assert ours["metadata"] == theirs["metadata"]
    assert_same_nodes(ours["nodes"], theirs["nodes"])
    assert_same_links(ours["links"], theirs["links"])


def test_from_graph_reads_graph_and_prune_fields(tmp_path):
    """The Graph/PruneResult route (field names as torch-mi's Graph) gives the same JSON."""
    g = golden_export("clt_capped")
    graph = SimpleNamespace(adjacency_matrix=g.adjacency, active_features=g.active_features,
                            activation_values=g.activation_values,
                            selected_features=g.selected_features, input_tokens=g.input_tokens,
                            logit_token_ids=g.logit_targets,
                            logit_probabilities=g.logit_probabilities, n_layers=N_LAYERS,
                            logit_tokens=tuple(g.logit_token_strings), input_string=g.prompt,
                            config={"scan": "clt"})
    pruned = SimpleNamespace(node_mask=g.node_mask, edge_mask=g.edge_mask,
                             cumulative_scores=g.cumulative_scores)
    export = GraphExport.from_graph(graph, pruned, g.prompt_tokens, slug="clt_capped",
                                    node_threshold=0.8)
    assert to_neuronpedia_json(export) == to_neuronpedia_json(g)
    with pytest.raises(InputError, match="from_graph"):
        GraphExport.from_graph(SimpleNamespace(), pruned, g.prompt_tokens, slug="x")


# ---- bad input ---------------------------------------------------------------------------------
def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "g.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _golden_doc() -> dict:
    return json.loads((GOLDEN / "neuronpedia" / "plt_capped.json").read_text())


def _mutate(fn):
    doc = _golden_doc()
    fn(doc)
    return doc


@pytest.mark.parametrize("doc, match", [
    ("[1, 2]", "top level"),
    ("{\"metadata\": 3}", "metadata"),
    ("{not json", "not valid"),
    ('{"a": NaN}', "NaN"),
    ("[" * 100_000 + "]" * 100_000, "not valid"),
    (_mutate(lambda d: d["nodes"][0].update(ctx_idx="3")), r"ctx_idx"),
    (_mutate(lambda d: d["nodes"][0].update(ctx_idx=99)), r"past the 8 prompt tokens"),
    (_mutate(lambda d: d["nodes"][0].update(feature=True)), r"feature"),
    (_mutate(lambda d: d["nodes"][0].update(influence="big")), r"influence"),
    (_mutate(lambda d: d["nodes"][0].pop("node_id")), r"no 'node_id'"),
    (_mutate(lambda d: d["nodes"].append(dict(d["nodes"][0]))), r"used twice"),
    (_mutate(lambda d: d["nodes"].__setitem__(0, "x")), r"nodes\[0\]"),
    (_mutate(lambda d: d["links"][0].update(source="nope")), r"names no node"),
    (_mutate(lambda d: d["links"][0].update(weight=None)), r"weight"),
    (_mutate(lambda d: d["links"].append(7)), r"links\[\d+\]"),
    (_mutate(lambda d: d.update(links={})), r"lists"),
    (_mutate(lambda d: d["metadata"].update(prompt_tokens=[1, 2])), r"prompt_tokens"),
    (_mutate(lambda d: d.update(qParams=[])), r"qParams"),
])
def test_reader_rejects_malformed_files(tmp_path, doc, match):
    with pytest.raises(NeuronpediaFormatError, match=match) as info:
        load_neuronpedia_json(_write(tmp_path, doc))
    assert isinstance(info.value, InputError) and isinstance(info.value, MIError)


def test_reader_size_limits(tmp_path):
    path = _write(tmp_path, _golden_doc())
    with pytest.raises(NeuronpediaFormatError, match="byte"):
        load_neuronpedia_json(path, max_bytes=1000)
    with pytest.raises(NeuronpediaFormatError, match="limits"):
        load_neuronpedia_json(path, max_links=3)
    with pytest.raises(NeuronpediaFormatError, match="does not exist"):
        load_neuronpedia_json(tmp_path / "missing.json")
    assert len(load_neuronpedia_json(path).links) == META["runs"]["plt_capped"]["n_kept_edges"]


def test_writer_rejects_inconsistent_inputs(tmp_path):
    g = golden_export("plt_capped")
    g.adjacency = g.adjacency[:-1]
    with pytest.raises(InputError, match="adjacency"):
        to_neuronpedia_json(g, tmp_path / "x.json")
    g = golden_export("plt_capped")
    g.prompt_tokens = g.prompt_tokens[:-1]
    with pytest.raises(InputError, match="prompt_tokens"):
        to_neuronpedia_json(g)
    g = golden_export("plt_capped")
    g.adjacency = g.adjacency.clone()
    g.adjacency[g.edge_mask] = torch.nan
    with pytest.raises(InputError, match="NaN"):
        to_neuronpedia_json(g, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(InputError, match="GraphExport"):
        to_neuronpedia_json({"nodes": []})
