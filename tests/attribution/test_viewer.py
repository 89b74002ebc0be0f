"""The attribution-graph viewer: one self-contained HTML page, checked in headless Chromium.

The graph is circuit-tracer's own Neuronpedia JSON (tests/golden/circuit_tracer_attribution/
neuronpedia/clt_full.json, written by its create_graph_files), so the node and link counts
come from the oracle, not from our exporter. Chromium runs the page's script and dumps the
DOM; the URL hash drives the same code as the sliders and clicks
(``#threshold=…&minw=…&select=…``). Skipped when no Chromium is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from torch_mi.attribution.neuronpedia import NeuronpediaFormatError, load_neuronpedia_json
from torch_mi.attribution.viewer import render_html, write_html
from torch_mi.cli.main import main
from torch_mi.errors import InputError

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "circuit_tracer_attribution"
GRAPH = GOLDEN / "neuronpedia" / "clt_full.json"
META = json.loads((GOLDEN / "meta.json").read_text())["runs"]["clt_full"]
BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no chromium/chrome on PATH "
                                   "(apt-get install chromium); the viewer DOM is not checked")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", "--window-size=1400,560"]


def browser(*args: str) -> str:
    done = subprocess.run([BROWSER, *FLAGS, *args], capture_output=True, text=True,
                          timeout=90, check=True)
    return done.stdout


def dom(page: Path, fragment: str = "") -> str:
    return browser("--dump-dom", page.as_uri() + fragment)


def stat(text: str, name: str) -> str:
    found = re.search(rf'id="stats"[^>]*data-{name}="([^"]*)"', text)
    assert found, f"no data-{name} on #stats: the page script did not run"
    return found.group(1)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    return write_html(GRAPH, tmp_path_factory.mktemp("viewer") / "clt_full.html")


def test_page_is_self_contained(page: Path):
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)


@needs_browser
def test_dom_has_every_node_and_link_of_the_pruned_graph(page: Path, tmp_path):
    doc = json.loads(GRAPH.read_text())
    text = dom(page)
    assert len(doc["nodes"]) == META["n_kept_nodes"]  # circuit-tracer's pruned graph
    assert len(re.findall(r'<g class="node', text)) == len(doc["nodes"])
    assert int(stat(text, "visible-nodes")) == len(doc["nodes"])
    assert len(re.findall(r'<path class="link', text)) == len(doc["links"])
    assert int(stat(text, "visible-links")) == len(doc["links"]) == 217
    shot = tmp_path / "viewer.png"
    browser(f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@needs_browser
def test_threshold_and_selection_change_what_is_shown(page: Path):
    doc = json.loads(GRAPH.read_text())
    fixed = {"embedding", "logit"}
    expected = sum(n["feature_type"] in fixed or n["influence"] is None
                   or n["influence"] <= 0.5 for n in doc["nodes"])
    text = dom(page, "#threshold=0.5")
    assert int(stat(text, "visible-nodes")) == expected < len(doc["nodes"])
    assert int(stat(text, "visible-links")) < len(doc["links"])
    text = dom(page, "#minw=0.5")
    assert int(stat(text, "visible-nodes")) == len(doc["nodes"])
    assert 0 < int(stat(text, "visible-links")) < 30
    text = dom(page, "#select=1_0_7")
    assert stat(text, "selected") == "1_0_7" and int(stat(text, "highlighted")) > 3
    assert 'class="node dim"' in text


@needs_browser
def test_hostile_labels_stay_text(tmp_path):
    doc = json.loads(GRAPH.read_text())
    doc["nodes"][0]["clerp"] = "</script><script>document.title='pwned'</script>"
    doc["metadata"]["prompt_tokens"][1] = "<img src=x onerror=alert(1)>"
    doc["metadata"]["slug"] = "<b>slug</b>"
    src = tmp_path / "g.json"
    src.write_text(json.dumps(doc))
    text = dom(write_html(src))
    assert "pwned" not in text.split("</title>")[0]
    assert "<img" not in text and int(stat(text, "visible-nodes")) == len(doc["nodes"])


def test_cli_writes_the_page_and_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "g.html"
    assert main(["graph", "view", str(GRAPH), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["html"] == str(out)
    assert "graph-data" in out.read_text()
    assert main(["graph", "view", str(tmp_path / "missing.json")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"metadata": {}, "nodes": [], "links": []}')
    assert main(["graph", "view", str(bad), "--out", str(tmp_path / "bad.html")]) == 1
    assert not (tmp_path / "bad.html").exists()
    assert main(["graph"]) == 2


def test_api_errors(tmp_path):
    with pytest.raises(InputError, match="NeuronpediaGraph"):
        render_html(json.loads(GRAPH.read_text()))
    copy = tmp_path / "g.json"
    copy.write_text(GRAPH.read_text())
    with pytest.raises(InputError, match="graph file itself"):
        write_html(copy, copy)
    copy.write_text("[]")
    with pytest.raises(NeuronpediaFormatError):
        write_html(copy)
    assert load_neuronpedia_json(GRAPH).metadata["slug"] == "clt_full"
