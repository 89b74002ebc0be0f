"""``torch-mi attribute --transcoders PATH --prompt TEXT --out graph.json [--html graph.html]``:
the attribution graph of a prompt through the local replacement model.

``--out graph.json`` gets the pruned graph in the Neuronpedia JSON schema; the full graph
(every node and edge, for ``Graph.load``) is written next to it as
``graph.graph.safetensors`` + ``graph.graph.json``. ``--html`` also writes the
self-contained viewer page. The transcoders are opened before the model loads, so a bad
path fails fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...attribution import attribute, compute_graph_scores, prune_graph
from ...attribution.graph import Graph
from ...attribution.neuronpedia import GraphExport, to_neuronpedia_json
from ...attribution.prune import PruneResult
from ...attribution.viewer import write_html
from ...dictionaries import CrossLayerTranscoder
from ...errors import InputError, MIError
from ..common import add_model_args, console, emit_json, load_model
from .features import prompt_of


def register(sub) -> None:
    p = sub.add_parser("attribute", help="attribution graph of a prompt through transcoders "
                                         "(circuit-tracer's method)")
    p.add_argument("text", nargs="?", default=None, metavar="PROMPT",
                   help="the prompt (or --prompt)")
    p.add_argument("--prompt", default=None, help="the prompt (same as the positional one)")
    p.add_argument("--transcoders", required=True, metavar="PATH",
                   help="transcoder folder or circuit-tracer config.yaml (CLT or per-layer)")
    p.add_argument("--out", required=True, metavar="GRAPH.json",
                   help="Neuronpedia graph JSON to write (the full graph goes next to it as "
                        "GRAPH.graph.safetensors + GRAPH.graph.json)")
    p.add_argument("--html", default=None, metavar="HTML",
                   help="also write the self-contained HTML viewer here")
    p.add_argument("--max-feature-nodes", type=int, default=None,
                   help="keep only the N most influential features (default: all)")
    p.add_argument("--node-threshold", type=float, default=0.8,
                   help="pruning: keep nodes holding this share of the influence (0.8)")
    p.add_argument("--edge-threshold", type=float, default=0.98,
                   help="pruning: keep edges holding this share of the influence (0.98)")
    p.add_argument("--max-n-logits", type=int, default=10,
                   help="logit targets: at most this many top tokens (10)")
    p.add_argument("--desired-logit-prob", type=float, default=0.95,
                   help="logit targets: stop once they cover this probability (0.95)")
    p.add_argument("--target", action="append", default=None, metavar="TOKEN",
                   help="a logit target (single-token string); repeat for several")
    p.add_argument("--batch-size", type=int, default=256, help="rows per backward pass (256)")
    p.add_argument("--slug", default=None, help="graph name in the JSON (default: the file stem)")
    add_model_args(p)
    p.set_defaults(run=run)


def _token_text(model, token_id: int) -> str:
    try:
        return model.require_tokenizer().decode([token_id], errors="replace")
    except MIError:
        return ""


def export(model, graph: Graph, pruned: PruneResult, slug: str, node_threshold: float,
           prompt: str) -> GraphExport:
    """Our graph + its pruning in the Neuronpedia writer's terms."""
    return GraphExport(
        adjacency=graph.adjacency_matrix, active_features=graph.active_features,
        activation_values=graph.activation_values, selected_features=graph.selected_features,
        input_tokens=graph.input_tokens, logit_targets=graph.logit_token_ids,
        logit_probabilities=graph.logit_probabilities, n_layers=graph.n_layers,
        node_mask=pruned.node_mask, edge_mask=pruned.edge_mask,
        cumulative_scores=pruned.cumulative_scores,
        prompt_tokens=[_token_text(model, int(t)) for t in graph.input_tokens.tolist()],
        logit_token_strings=list(graph.logit_tokens), prompt=prompt, slug=slug,
        scan=str(graph.config.get("scan") or "unknown"), node_threshold=node_threshold)


def run(args: argparse.Namespace) -> int:
    prompt = prompt_of(args)
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out!r} must end in .json (the Neuronpedia graph file)")
    for name in ("node_threshold", "edge_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise InputError(f"--{name.replace('_', '-')} must be in [0, 1], got "
                             f"{getattr(args, name)}")
    transcoders = CrossLayerTranscoder.from_local(args.transcoders)  # fails before loading
    model = load_model(args)
    graph = attribute(model, prompt, transcoders, max_n_logits=args.max_n_logits,
                      desired_logit_prob=args.desired_logit_prob, batch_size=args.batch_size,
                      max_feature_nodes=args.max_feature_nodes, target_tokens=args.target,
                      verbose=not args.json)
    pruned = prune_graph(graph, args.node_threshold, args.edge_threshold)
    slug = args.slug or out.stem
    full = graph.save(out.with_name(out.stem + ".graph"))
    to_neuronpedia_json(export(model, graph, pruned, slug, args.node_threshold, prompt), out)
    html = write_html(out, args.html, title=slug) if args.html else None
    replacement, completeness = compute_graph_scores(graph)
    result = {"graph_json": str(out), "graph_files": [str(p) for p in full],
              "html": None if html is None else str(html), "n_nodes": graph.n_nodes,
              "n_features": graph.n_features, "n_active_features": len(graph.activation_values),
              "kept_nodes": int(pruned.node_mask.sum()), "kept_edges": int(pruned.edge_mask.sum()),
              "logit_targets": list(graph.logit_tokens), "replacement_score": replacement,
              "completeness_score": completeness}
    if args.json:
        emit_json(result)
    else:
        console.print(f"{graph.n_nodes} nodes ({graph.n_features} features); kept "
                      f"{result['kept_nodes']} nodes, {result['kept_edges']} edges; "
                      f"replacement {replacement:.3f}, completeness {completeness:.3f}")
        console.print(f"wrote {out}, {full[0]}, {full[1]}" + (f", {html}" if html else ""))
    return 0
