"""Graph files (safetensors + JSON, shapes checked on load) and typed errors for bad input:
transcoders that do not fit the model, a prompt the memory budget cannot hold (the error
names the estimate), unknown target tokens, bad options."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from tests.attribution.transcoders import make_clt, make_plt
from tests.dictionaries.clt_files import write_clt
from torch_mi.attribution import Graph, attribute, engine, estimate_attribution, prune_graph
from torch_mi.errors import (
    ConfigError,
    InputError,
    MemoryReportError,
    MIError,
    TokenizerError,
    WeightError,
)

IDS = [1, 40, 41, 42, 43, 44, 45, 46]


@pytest.fixture(scope="module")
def model(loaded):
    return loaded["llama"]


@pytest.fixture(scope="module")
def clt_dir(model, tmp_path_factory):
    return make_clt(tmp_path_factory.mktemp("clt"), model.num_layers, model.hidden_size)


@pytest.fixture(scope="module")
def graph(model, clt_dir) -> Graph:
    return attribute(model, IDS, clt_dir, max_n_logits=4, desired_logit_prob=0.9, batch_size=8,
                     max_feature_nodes=20)


def test_graph_layout(graph, model):
    assert graph.n_features == 20 and graph.n_pos == len(IDS)
    assert graph.n_nodes == 20 + (model.num_layers + 1) * len(IDS) + graph.n_logits
    assert graph.node(0)[0] == "feature" and graph.node(graph.error_offset) == ("error", (0, 0))
    assert graph.node(graph.token_offset + 2) == ("token", (2,))
    assert graph.node(graph.n_nodes - 1)[0] == "logit"
    assert (graph.adjacency_matrix[:, graph.logit_offset:] == 0).all()  # logits are sinks
    assert graph.config["options"]["max_feature_nodes"] == 20
    with pytest.raises(ConfigError, match="out of range"):
        graph.node(graph.n_nodes)


def test_save_load_roundtrip(graph, tmp_path):
    tensors, meta = graph.save(tmp_path / "g.json")
    assert tensors.name == "g.safetensors" and meta.name == "g.json"
    back = Graph.load(tmp_path / "g")
    for name in ("adjacency_matrix", "active_features", "selected_features", "logit_token_ids",
                 "logit_probabilities", "activation_values", "input_tokens"):
        assert_close(getattr(back, name), getattr(graph, name), rtol=0, atol=0)
    assert back.logit_tokens == graph.logit_tokens and back.config == graph.config
    assert torch.equal(prune_graph(back).node_mask, prune_graph(graph).node_mask)


def test_load_rejects_bad_files(graph, tmp_path):
    tensors, meta = graph.save(tmp_path / "g")
    t = load_file(str(tensors))
    t["adjacency_matrix"] = t["adjacency_matrix"][:-1]
    save_file(t, str(tensors))
    with pytest.raises(WeightError, match="adjacency_matrix"):
        Graph.load(tmp_path / "g")
    del t["adjacency_matrix"]
    save_file(t, str(tensors))
    with pytest.raises(WeightError, match="lacks"):
        Graph.load(tmp_path / "g")
    meta.write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        Graph.load(tmp_path / "g")
    meta.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a torch-mi attribution graph"):
        Graph.load(tmp_path / "g")
    with pytest.raises(ConfigError, match="does not exist"):
        Graph.load(tmp_path / "missing")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda t: t["adjacency_matrix"].__setitem__((0, 0), float("nan")), "NaN or infinite"),
    (lambda t: t["activation_values"].__setitem__(0, float("inf")), "NaN or infinite"),
    (lambda t: t["logit_token_ids"].__setitem__(0, 10**9), "vocabulary ids"),
    (lambda t: t["active_features"].__setitem__((0, 0), 99), "active_features rows"),
    (lambda t: t["active_features"].__setitem__((0, 2), -1), "active_features rows"),
])
def test_load_rejects_hostile_values(graph, tmp_path, edit, match):
    tensors, _ = graph.save(tmp_path / "g")
    t = load_file(str(tensors))
    edit(t)
    save_file(t, str(tensors))
    with pytest.raises(WeightError, match=match):
        Graph.load(tmp_path / "g")


def test_transcoders_that_do_not_fit(model, tmp_path):
    write_clt(tmp_path / "narrow", model.num_layers, 16, 8)  # d_model 8, not 64
    with pytest.raises(ConfigError, match="d_model=8"):
        attribute(model, IDS, tmp_path / "narrow")
    write_clt(tmp_path / "deep", model.num_layers + 1, 16, model.hidden_size)
    with pytest.raises(ConfigError, match="layers"):
        attribute(model, IDS, tmp_path / "deep")


def test_memory_budget(model, clt_dir, monkeypatch):
    est = estimate_attribution(model, 8, 100, 100, 3)
    assert est.total_bytes(2) - est.total_bytes(1) == est.per_row_bytes > 0
    # more decoder rows kept (a CLT's) and skip matrices cost more
    assert estimate_attribution(model, 8, 100, 100, 3, 100 * 4).fixed_bytes > \
        estimate_attribution(model, 8, 100, 100, 3, 100).fixed_bytes
    assert estimate_attribution(model, 8, 100, 100, 3, extra_bytes=1 << 20).fixed_bytes == \
        est.fixed_bytes + (1 << 20)
    with pytest.raises(MemoryReportError, match=r"estimate for 8 tokens.*memory_budget"):
        attribute(model, IDS, clt_dir, memory_budget=10_000)
    # the run's own estimate (spied), then a budget of exactly three seeds lowers the batch
    seen = []
    real = engine.estimate_attribution
    monkeypatch.setattr(engine, "estimate_attribution",
                        lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    full = attribute(model, IDS, clt_dir, batch_size=64)
    budget = seen[0].total_bytes(3) + 1
    g = attribute(model, IDS, clt_dir, batch_size=64, memory_budget=budget)
    assert full.config["options"]["batch_size"] == 64
    assert g.config["options"]["batch_size"] == 3
    assert_close(g.adjacency_matrix, full.adjacency_matrix, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="memory_budget"):
        attribute(model, IDS, clt_dir, memory_budget=-5)


def test_target_tokens(model, clt_dir):
    g = attribute(model, IDS, clt_dir, target_tokens=[65, "B"], batch_size=8)
    assert g.logit_token_ids.tolist() == [65, model.to_single_token("B")]
    with pytest.raises(InputError, match="outside the vocabulary"):
        attribute(model, IDS, clt_dir, target_tokens=[100_000])
    with pytest.raises(TokenizerError):
        attribute(model, IDS, clt_dir, target_tokens=["two tokens"])
    with pytest.raises(InputError, match="empty"):
        attribute(model, IDS, clt_dir, target_tokens=[])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_size": 0}, "batch_size"), ({"max_feature_nodes": 0}, "max_feature_nodes"),
    ({"max_n_logits": 0}, "max_n_logits"), ({"desired_logit_prob": 1.5}, "desired_logit_prob"),
])
def test_bad_options(model, clt_dir, kwargs, match):
    with pytest.raises(InputError, match=match):
        attribute(model, IDS, clt_dir, **kwargs)


def test_bad_prompts_and_thresholds(model, clt_dir, graph):
    with pytest.raises(InputError, match="at least 2"):
        attribute(model, [1], clt_dir)
    with pytest.raises(InputError, match="one prompt"):
        attribute(model, torch.ones(2, 5, dtype=torch.long), clt_dir)
    with pytest.raises(MIError):
        attribute(model, IDS, clt_dir / "nope")
    with pytest.raises(InputError, match="node_threshold"):
        prune_graph(graph, node_threshold=1.5)


def test_text_prompt_and_plt(model, tmp_path):
    folder = make_plt(tmp_path / "plt", model.num_layers, model.hidden_size)
    g = attribute(model, "Hello", folder, batch_size=4)
    assert g.input_tokens.tolist() == model.encode("Hello")[0].tolist()
    assert g.config["transcoders"]["skip"] and g.input_string.endswith("Hello")
