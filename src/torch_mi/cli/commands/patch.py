"""``torch-mi patch``: causal trace (activation patching) heatmap."""

from __future__ import annotations

import argparse

from rich.table import Table

from ...interp.patching import METRICS, PATCH_KINDS, causal_trace
from ..checks import non_empty
from ..common import add_model_args, checked_plot, console, emit_json, load_model


def register(sub) -> None:
    p = sub.add_parser("patch", help="causal trace: patch clean activations into a corrupted run")
    p.add_argument("clean", help="clean prompt, e.g. 'The capital of France is'")
    p.add_argument("corrupted", help="corrupted prompt with the same token count")
    p.add_argument("--kind", default="resid_post", choices=sorted(PATCH_KINDS))
    p.add_argument("--metric", default="prob", choices=METRICS)
    p.add_argument("--answer", default=None, help="answer token (default: clean top-1)")
    p.add_argument("--foil", default=None, help="foil token for --metric logit_diff")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="layer x position heatmap")
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    non_empty("--answer", args.answer)
    non_empty("--foil", args.foil)
    plot_file = checked_plot(args)
    model = load_model(args)
    trace = causal_trace(model, args.clean, args.corrupted, answer=args.answer, foil=args.foil,
                         kind=args.kind, metric=args.metric, progress=not args.json)
    data = {"clean": args.clean, "corrupted": args.corrupted,
            "answer": model.tokenizer.decode_token(trace.answers[0]), **trace.to_dict()}
    if plot_file is not None:
        data["plot"] = trace.plot(plot_file, title=f"causal trace ({args.kind}): "
                                                   f"{args.clean!r} vs {args.corrupted!r}")
    if args.json:
        emit_json(data)
        return 0
    console.print(f"answer {data['answer']!r}: {args.metric} clean "
                  f"{trace.clean_metric[0]:.4f}, corrupted {trace.corrupted_metric[0]:.4f}")
    table = Table(title=f"normalised effect of patching {args.kind} (best position per layer)")
    for col in ("layer", "best position", "token", "effect", "effect at subject"):
        table.add_column(col, justify="right")
    differing = [i for i, (a, b) in enumerate(zip(model.encode(args.clean)[0].tolist(),
                                                 model.encode(args.corrupted)[0].tolist(),
                                                 strict=True)) if a != b]
    subject = differing[0] if differing else 0
    for layer in range(trace.effect.shape[0]):
        row = trace.effect[layer]
        pos = int(row.argmax())
        table.add_row(str(layer), str(pos), repr(trace.tokens[pos]), f"{row[pos]:.3f}",
                      f"{row[subject]:.3f}")
    console.print(table)
    layer, pos, value = trace.best()
    console.print(f"strongest: layer {layer}, position {pos} ({trace.tokens[pos]!r}), "
                  f"effect {value:.3f}")
    if plot_file is not None:
        console.print(f"heatmap written to {data['plot']}")
    return 0
