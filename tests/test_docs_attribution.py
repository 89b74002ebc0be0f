"""docs/attribution.md: the worked example runs as written and reproduces circuit-tracer's
numbers for the same run (tests/golden/circuit_tracer_attribution/meta.json, plt_full),
writes files our readers accept, and the reference section's error promises hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.attribution.transcoders import make_clt
from torch_mi.attribution import attribute
from torch_mi.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "attribution.md"
GOLDEN = ROOT / "tests" / "golden" / "circuit_tracer_attribution"
BLOCK = re.compile(r"```python attribution-example\n(.*?)```", re.S)


@pytest.fixture(scope="module")
def scope(tmp_path_factory, monkeypatch_module):
    blocks = BLOCK.findall(PAGE.read_text())
    assert len(blocks) == 1
    out = tmp_path_factory.mktemp("attribution_doc")
    code = blocks[0].replace('out = Path("graph_out")', f"out = Path({str(out)!r})")
    assert str(out) in code  # the page still names its output folder the same way
    monkeypatch_module.chdir(ROOT)  # the block uses paths relative to a checkout
    names: dict = {}
    exec(compile(code, str(PAGE), "exec"), names)  # our own documentation
    return names, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_example_reproduces_circuit_tracer_run(scope):
    names, _ = scope
    want = json.loads((GOLDEN / "meta.json").read_text())["runs"]["plt_full"]
    graph, pruned = names["graph"], names["pruned"]
    assert graph.n_features == want["n_selected_features"]
    assert graph.n_nodes == want["n_nodes"]
    assert int(pruned.node_mask.sum()) == want["n_kept_nodes"]
    assert int(pruned.edge_mask.sum()) == want["n_kept_edges"]
    assert names["replacement"] == pytest.approx(want["graph_scores"]["replacement"], rel=1e-4)
    assert names["completeness"] == pytest.approx(want["graph_scores"]["completeness"], rel=1e-4)


def test_example_comments_match_what_it_prints(scope):
    names = scope[0]
    g, p = names["graph"], names["pruned"]
    line = (f"{g.n_features} features, {g.n_nodes} nodes; kept {int(p.node_mask.sum())} nodes, "
            f"{int(p.edge_mask.sum())} edges; replacement {names['replacement']:.3f}, "
            f"completeness {names['completeness']:.3f}")
    assert f"# {line}" in PAGE.read_text()


def test_example_files_and_intervention(scope):
    names, out = scope
    graph = names["graph"]
    assert names["reloaded"].n_nodes == graph.n_nodes
    assert torch.equal(names["reloaded"].adjacency_matrix, graph.adjacency_matrix)
    assert names["page"] == out / "the-cat.html" and names["page"].is_file()
    assert names["n_json_nodes"] >= graph.n_pos + graph.n_logits
    assert names["kind"] == "feature"
    # Turning off a feature with a direct effect on the top logit moves that logit.
    top = names["top"]
    assert abs(float(names["run"].logits[0, -1, top]) - float(names["clean"][top])) > 1e-3


def test_reference_error_promises(scope, tmp_path):
    names = scope[0]
    model = names["model"]
    with pytest.raises(InputError, match="at least 2"):
        attribute(model, [1], GOLDEN / "plt")
    wrong = make_clt(tmp_path, model.num_layers - 1, model.hidden_size)
    with pytest.raises(ConfigError, match="2 layers but the model has 3"):
        attribute(model, [1, 84, 104], wrong)
