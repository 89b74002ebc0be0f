"""``torch-mi state-knockout``: drop token positions' writes into an RWKV model's recurrent
state and measure what changes at the last position (interp/rwkv_state.py).

Prints KL(baseline || knocked out), the top changed tokens, and the per-layer effect: the KL
when the same positions are knocked out of one layer's state at a time (``--plot`` draws
it). Positions count in the prompt's tokens; negatives count from the end."""

from __future__ import annotations

import argparse

from rich.table import Table

from ...errors import InputError
from ...hooks.state import StateKnockoutSpec
from ...interp.logit_lens import format_probability, format_token
from ...interp.rwkv_state import run_state_knockout, state_knockout_per_layer
from ..checks import at_least, int_list
from ..common import add_model_args, checked_plot, console, emit_json, load_model


def register(sub) -> None:
    p = sub.add_parser("state-knockout",
                       help="RWKV: knock positions out of the recurrent state; KL, top changed "
                            "tokens, per-layer effect")
    p.add_argument("prompt")
    p.add_argument("--positions", default=None, metavar="P[,P...]",
                   help="token positions whose state writes are dropped (default: 0; "
                        "negatives count from the end)")
    p.add_argument("--layers", default=None, metavar="L[,L...]",
                   help="layers whose state loses them (default: all; negatives from the end)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="line plot of the per-layer effect (KL per layer)")
    add_model_args(p)
    p.set_defaults(run=run)


def _indices(option: str, values: list[int] | None, bound: int, default: list[int] | None,
             what: str) -> list[int] | None:
    """``values`` made non-negative (negatives count from the end), checked below ``bound``."""
    if values is None:
        return default
    out = [v + bound if v < 0 else v for v in values]
    bad = [v for v, o in zip(values, out, strict=True) if not 0 <= o < bound]
    if bad:
        raise InputError(f"{option}: {bad} out of range for {bound} {what} (0..{bound - 1}; "
                         f"negatives count from the end)")
    return sorted(set(out))


def run(args: argparse.Namespace) -> int:
    at_least("--top-k", args.top_k, 1)
    plot_file = checked_plot(args)
    positions_arg, layers_arg = int_list("--positions", args.positions), \
        int_list("--layers", args.layers)
    model = load_model(args)
    if not hasattr(model.backend.make_state(), "layers"):  # only RWKV has a recurrent state
        raise InputError(f"state-knockout needs an RWKV model (a recurrent state); "
                         f"{model.config.model_type} is a {type(model.backend).__name__}. "
                         f"Use `torch-mi knockout` for attention edges")
    tok = model.require_tokenizer()
    ids = model.encode(args.prompt)[0].tolist()
    positions = _indices("--positions", positions_arg, len(ids), [0], "prompt tokens")
    layers = _indices("--layers", layers_arg, model.num_layers, None, "layers")
    spec = StateKnockoutSpec().positions(positions)
    if layers is not None:
        spec.layers(layers)
    result = run_state_knockout(model, ids, spec)
    per_layer = state_knockout_per_layer(model, ids, positions).tolist()  # [L]
    data = {"prompt": args.prompt, "positions": positions,
            "position_tokens": [tok.decode_token(ids[p]) for p in positions],
            "layers": "all" if layers is None else layers,
            **result.to_dict(tok.decode_token, args.top_k),
            "per_layer_kl": per_layer, "plot": None}
    if plot_file is not None:
        from ...plots import plot_curve

        data["plot"] = plot_curve(range(model.num_layers), per_layer, plot_file,
                                  xlabel="layer", ylabel="KL(baseline || knocked out)",
                                  title=f"state knockout of positions {positions}: "
                                        f"{args.prompt[:40]!r}")
    if args.json:
        emit_json(data)
        return 0
    _print(data, model.num_layers)
    return 0


def _print(data: dict, n_layers: int) -> None:
    shown = ", ".join(f"{p} {format_token(t)!r}" for p, t in
                      zip(data["positions"], data["position_tokens"], strict=True))
    console.print(f"State knockout of position(s) {shown} at layers {data['layers']}")
    console.print(f"KL(baseline || knocked out) = {data['kl_divergence']:.6f}")
    table = Table(title="top changed tokens")
    for col in ("token", "baseline", "knocked out", "|dp|"):
        table.add_column(col, justify="left" if col == "token" else "right")
    for row in data["top_changed"]:
        table.add_row(repr(format_token(row["token"])), format_probability(row["p_baseline"]),
                      format_probability(row["p_intervened"]), f"{row['abs_delta']:.5f}")
    console.print(table)
    effect = Table(title="per-layer effect (the positions knocked out of one layer at a time)")
    effect.add_column("layer", justify="right")
    effect.add_column("KL", justify="right")
    effect.add_column("")
    top = max(data["per_layer_kl"]) or 1.0
    for layer in range(n_layers):
        kl = data["per_layer_kl"][layer]
        effect.add_row(str(layer), f"{kl:.6f}", "#" * round(30 * kl / top))
    console.print(effect)
    if data["plot"]:
        console.print(f"plot written to {data['plot']}")
