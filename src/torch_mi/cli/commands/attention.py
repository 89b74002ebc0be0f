"""``torch-mi attention``: where the last token looks, per layer (and a per-head grid)."""

from __future__ import annotations

import argparse

from rich.table import Table

from ...errors import InputError
from ...hooks.points import HookPoint
from ...hooks.spec import HookSpec
from ..checks import at_least
from ..common import add_model_args, checked_plot, console, emit_json, load_model, parse_layer


def register(sub) -> None:
    p = sub.add_parser("attention", help="attention patterns (head-averaged table, head grid)")
    p.add_argument("prompt")
    p.add_argument("--layer", default=None,
                   help="layer to show (default: all layers in the table, last layer plotted)")
    p.add_argument("--position", type=int, default=-1, help="query position (default: last)")
    p.add_argument("--top-k", type=int, default=3, help="attended positions listed")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="per-head pattern grid")
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    at_least("--top-k", args.top_k, 1)
    plot_file = checked_plot(args)
    model = load_model(args)
    tok = model.require_tokenizer()
    ids = model.encode(args.prompt)
    tokens = [tok.decode_token(int(t)) for t in ids[0]]
    n = model.num_layers
    layers = list(range(n)) if args.layer is None else [parse_layer(args.layer, n)]
    cache = model.forward(ids, HookSpec().capture(*(HookPoint.AttnPattern(i) for i in layers)))
    query = args.position if args.position >= 0 else len(tokens) + args.position
    if not 0 <= query < len(tokens):
        raise InputError(f"--position {args.position} is outside the {len(tokens)}-token prompt")
    rows = []
    for layer in layers:
        pattern = cache[HookPoint.AttnPattern(layer)][0]  # [H, S, S]
        mean = pattern[:, query].float().mean(0)  # head-averaged row
        top = mean.topk(min(args.top_k, len(tokens)))
        rows.append({"layer": layer, "attended": [
            {"position": int(i), "token": tokens[int(i)], "weight": float(w)}
            for w, i in zip(top.values, top.indices, strict=True)],
            "to_first": float(mean[0])})
    plot = None
    if plot_file is not None:
        from ...plots import plot_attention

        shown_layer = layers[-1]
        plot = plot_attention(cache[HookPoint.AttnPattern(shown_layer)][0], tokens, plot_file,
                              title=f"layer {shown_layer} attention - {args.prompt!r}")
    if args.json:
        emit_json({"prompt": args.prompt, "tokens": tokens, "query_position": query,
                   "layers": rows, "plot": plot})
        return 0
    table = Table(title=f"Attention from {tokens[query]!r} (position {query}), head average")
    table.add_column("layer", justify="right")
    table.add_column("top attended positions")
    table.add_column("to position 0", justify="right")
    for row in rows:
        listed = ", ".join(f"{a['position']}:{a['token']!r} {a['weight']:.3f}"
                           for a in row["attended"])
        table.add_row(str(row["layer"]), listed, f"{row['to_first']:.3f}")
    console.print(table)
    if plot:
        console.print(f"head grid written to {plot}")
    return 0
