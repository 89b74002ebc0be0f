"""``torch-mi lens``: logit lens table (and layer x position heatmap with --plot)."""

from __future__ import annotations

import argparse

import torch
from rich.progress import Progress
from rich.table import Table

from ...errors import InputError
from ...hooks.spec import HookSpec
from ...interp.logit_lens import LENS_HOOKS, format_probability, format_token, logit_lens
from ..checks import at_least, non_empty
from ..common import add_model_args, checked_plot, console, emit_json, err_console, load_model


def register(sub) -> None:
    p = sub.add_parser("lens", help="logit lens: what each layer would predict")
    p.add_argument("prompts", nargs="+", help="prompt text(s)")
    p.add_argument("--top-k", type=int, default=5, help="predictions shown per layer")
    p.add_argument("--hook", default="resid_post",
                   help=f"residual hook read at each layer: {', '.join(sorted(LENS_HOOKS))}")
    p.add_argument("--target", default=None,
                   help="token to track: one token, with or without its leading space "
                        "(default: the model's top prediction); with --plot the heatmap "
                        "shows its probability")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write a layer x position heatmap of the top-1 probability, or of "
                        "--target's (one file per prompt: FILE-N.png)")
    add_model_args(p)
    p.set_defaults(run=run)


def _plot_path(base: str, index: int, total: int) -> str:
    if total == 1:
        return base
    stem, dot, ext = base.rpartition(".")
    return f"{stem}-{index + 1}.{ext}" if dot else f"{base}-{index + 1}"


def run(args: argparse.Namespace) -> int:
    if args.hook not in LENS_HOOKS:
        raise InputError(f"--hook: unknown lens hook {args.hook!r}; choose one of "
                         f"{sorted(LENS_HOOKS)}")
    at_least("--top-k", args.top_k, 1)
    non_empty("--target", args.target)
    plot = checked_plot(args)
    model = load_model(args)
    target_id = None  # strict: a target of several tokens is refused before any forward
    if args.target is not None:
        target_id = model.require_tokenizer().find_token_id(args.target.strip())
    results = []
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("logit lens", total=len(args.prompts))
        for prompt in args.prompts:
            results.append(logit_lens(model, prompt, k=max(args.top_k, 10), hook=args.hook))
            progress.advance(task)
    payload = []
    for index, analysis in enumerate(results):
        target = analysis.final_predictions[0].token if args.target is None else args.target
        entry = analysis.to_dict()
        entry["target"] = target
        entry["first_in_top_k"] = analysis.first_appearance(target, args.top_k)
        entry["first_top1"] = analysis.first_top1(target)
        if target_id is not None:
            entry["target_id"] = target_id
        if plot is not None:
            from ...plots import plot_logit_lens

            grid = None if target_id is None else target_grid(
                model, args.prompts[index], args.hook, target_id)
            entry["plot"] = plot_logit_lens(analysis, _plot_path(plot, index, len(results)),
                                            target=target, target_probs=grid)
        payload.append(entry)
        if not args.json:
            _render(analysis, entry, args.top_k)
    if args.json:
        emit_json(payload[0] if len(payload) == 1 else payload)
    return 0


def target_grid(model, prompt: str, hook: str, token_id: int) -> torch.Tensor:
    """Probability [L, S] of ``token_id`` read through the lens at every layer and position."""
    points = [LENS_HOOKS[hook](layer) for layer in range(model.num_layers)]
    cache = model.forward(model.encode(prompt), HookSpec().capture(*points))
    rows = []
    with torch.no_grad():
        for point in points:
            logits = model.project_to_vocab(cache[point][0]).float()  # [S, V]
            rows.append(torch.softmax(logits, dim=-1)[:, token_id])  # [S]
    return torch.stack(rows).cpu()


def _render(analysis, entry: dict, k: int) -> None:
    table = Table(title=f"Logit lens ({analysis.hook}) - {analysis.input_text!r}")
    table.add_column("layer", justify="right")
    table.add_column("top-1")
    table.add_column("p", justify="right")
    table.add_column(f"top-{k}")
    for result in analysis.layer_results:
        best = result.predictions[0]
        rest = ", ".join(f"{format_token(p.token)!r} {format_probability(p.probability)}"
                         for p in result.predictions[1:k])
        table.add_row(str(result.layer), repr(format_token(best.token)),
                      format_probability(best.probability), rest)
    console.print(table)
    out = analysis.final_predictions[0]
    console.print(f"model output: {format_token(out.token)!r} "
                  f"({format_probability(out.probability)})")
    target = entry["target"]
    first = entry["first_top1"]
    where = f"layer {first}" if first is not None else "no layer"
    console.print(f"{format_token(target)!r} is first the top-1 prediction at {where}; "
                  f"first in the top-{k} at layer {entry['first_in_top_k']}")
    if "plot" in entry:
        console.print(f"heatmap written to {entry['plot']}")
