"""A self-contained HTML viewer for attribution graphs in the Neuronpedia JSON schema.

One file, no network at view time: the checked graph document is embedded as JSON and drawn
by a small inline script (viewer_assets). Nodes sit on a grid of layer (rows; embeddings at
the bottom, logits on top) by token position (columns); edge width follows |weight| and
colour its sign (blue positive, red negative). Hovering shows a node's details and its
strongest inputs and outputs; clicking highlights everything upstream and downstream; the
sliders hide nodes whose cumulative influence is above a threshold (lower is more
important; tokens and logits always stay) and links under a fraction of the largest
|weight|. The URL hash ``#threshold=0.5&minw=0.1&select=NODE_ID`` sets the same state
(``&tip=NODE_ID`` also opens one node's tooltip, for screenshots).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from torch_mi.attribution.neuronpedia import NeuronpediaGraph, load_neuronpedia_json
from torch_mi.attribution.viewer_assets import CSS, JS
from torch_mi.errors import InputError

_LEGEND = """<span class="legend">
<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" fill="#319795"/></svg> feature</span>
<span><svg width="12" height="12"><rect x="2" y="2" width="8" height="8" fill="#a0aec0"
 transform="rotate(45 6 6)"/></svg> error</span>
<span><svg width="12" height="12"><rect width="12" height="12" rx="3" fill="#d69e2e"/></svg>
 token</span>
<span><svg width="12" height="12"><rect width="12" height="12" rx="3" fill="#805ad5"/></svg>
 logit</span>
<span style="color:#2b6cb0">&#9473; positive</span><span style="color:#c53030">&#9473; negative</span>
</span>"""


def _script_json(doc: dict) -> str:
    """JSON safe inside <script>: no "</" or "<!--" can close or confuse the element."""
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(graph: NeuronpediaGraph, title: str | None = None) -> str:
    """The viewer page for a checked graph (see :func:`load_neuronpedia_json`)."""
    if not isinstance(graph, NeuronpediaGraph):
        raise InputError(f"render_html takes a NeuronpediaGraph (from load_neuronpedia_json), "
                         f"got {type(graph).__name__}")
    meta = graph.metadata
    name = title or meta.get("slug") or "attribution graph"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(str(name))}</title>
<style>{CSS}</style></head>
<body>
<header>
<h1>{html.escape(str(name))}</h1>
<span class="prompt">{html.escape(str(meta.get("prompt", "")))}</span>
<label>node influence &le; <input type="range" id="threshold" min="0" max="1" step="0.01"
 value="1"><span id="threshold-value"></span></label>
<label>link |w| &ge; <input type="range" id="minw" min="0" max="1" step="0.01" value="0">
<span id="minw-value"></span> &times; max</label>
<span id="stats"></span>
{_LEGEND}
<span class="hint">hover a node for details; click it for its paths, the background to clear</span>
</header>
<div id="wrap"></div>
<div id="tip"></div>
<script type="application/json" id="graph-data">{_script_json(graph.to_dict())}</script>
<script>{JS}</script>
</body></html>
"""


def write_html(graph_json: str | os.PathLike, out: str | os.PathLike | None = None, *,
               title: str | None = None) -> Path:
    """Read and check ``graph_json``, write the viewer next to it (``.html``) or to ``out``;
    returns the written path. Nothing is written if the file is malformed."""
    source = Path(graph_json)
    graph = load_neuronpedia_json(source)
    target = Path(out) if out is not None else source.with_suffix(".html")
    if target.resolve() == source.resolve():
        raise InputError(f"--out {str(target)!r} is the graph file itself; choose another path")
    page = render_html(graph, title)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target
