"""``torch-mi graph view GRAPH.json [--out graph.html]``: turn an attribution graph in the
Neuronpedia JSON schema (ours or circuit-tracer's) into one self-contained HTML page."""

from __future__ import annotations

import argparse

from ...attribution.viewer import write_html
from ..common import console, emit_json


def register(sub) -> None:
    p = sub.add_parser("graph", help="work with attribution-graph files (view)")
    actions = p.add_subparsers(dest="graph_action", metavar="ACTION", required=True)
    view = actions.add_parser("view", help="write a self-contained HTML viewer for a graph "
                                           "JSON (no network needed to open it)")
    view.add_argument("graph_json", metavar="GRAPH.json",
                      help="graph in the Neuronpedia schema (to_neuronpedia_json or "
                           "circuit-tracer's create_graph_files)")
    view.add_argument("--out", default=None, metavar="HTML",
                      help="where to write the page (default: GRAPH.html next to the JSON)")
    view.add_argument("--title", default=None, help="page title (default: the graph's slug)")
    view.add_argument("--json", action="store_true", help="print the result as JSON")
    for flag in ("--verbose", "--debug"):  # accepted after the action too
        view.add_argument(flag, action="store_true", default=argparse.SUPPRESS,
                          help=argparse.SUPPRESS)
    view.set_defaults(run=run_view)


def run_view(args: argparse.Namespace) -> int:
    path = write_html(args.graph_json, args.out, title=args.title)
    if args.json:
        emit_json({"graph": args.graph_json, "html": str(path)})
    else:
        console.print(f"wrote {path} (open it in a browser; it needs no network)")
    return 0
