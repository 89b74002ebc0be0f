"""``torch-mi steer``: attention dose-response, or residual steering-vector generation."""

from __future__ import annotations

import argparse

from rich.table import Table

from ...errors import InputError
from ...hooks.points import HookPoint
from ...hooks.spec import HookSpec
from ...interp.dose import DOSE_LEVELS, dose_response
from ...interp.vectors import mean_difference_vector, steering_vector_hooks
from ..checks import at_least, finite, float_list, non_empty
from ..common import add_model_args, checked_plot, console, emit_json, load_model, parse_layer
from .knockout import parse_edge


def register(sub) -> None:
    p = sub.add_parser("steer", help="attention steering dose-response, or a steering vector")
    p.add_argument("prompt")
    p.add_argument("--layer", default=None, help="layer (default: the middle layer)")
    p.add_argument("--edge", default=None, metavar="FROM,TO", help="default: last,0")
    p.add_argument("--doses", default=",".join(str(d) for d in DOSE_LEVELS))
    p.add_argument("--target", default=None, help="token whose logit change is reported")
    p.add_argument("--positive", action="append", default=None,
                   help="steering-vector mode: prompt(s) of the concept to add (repeatable)")
    p.add_argument("--negative", action="append", default=None,
                   help="steering-vector mode: contrasting prompt(s) (repeatable)")
    p.add_argument("--scale", type=float, default=4.0,
                   help="steering-vector strength (default 4.0); see --scale-mode")
    p.add_argument("--scale-mode", choices=("absolute", "relative"), default="absolute",
                   help="absolute (default): add scale x the raw mean-difference vector, whose "
                        "length depends on the prompts (|v| and the residual norm are "
                        "printed); relative: add a vector of length scale x the residual's own "
                        "norm at each position (0.5 = half the residual; try 0.25-1)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--plot", default=None, metavar="FILE.png", help="dose-response curve")
    add_model_args(p)
    p.set_defaults(run=run)


def check(args: argparse.Namespace) -> tuple[float, ...]:
    """Option values, before the model loads; the doses."""
    finite("--scale", args.scale)
    at_least("--max-new-tokens", args.max_new_tokens, 1)
    for option in ("--target", "--positive", "--negative"):
        non_empty(option, getattr(args, option[2:]))
    if (args.positive is None) != (args.negative is None):
        raise InputError("steering-vector mode needs both --positive and --negative prompts")
    return float_list("--doses", args.doses)


def run(args: argparse.Namespace) -> int:
    doses = check(args)
    plot_file = checked_plot(args)
    model = load_model(args)
    layer = parse_layer(args.layer, model.num_layers, model.num_layers // 2)
    if args.positive is not None:
        return _vector_mode(args, model, layer)
    ids = model.encode(args.prompt)
    edge = parse_edge(args.edge, ids.shape[1])
    curve, calibration = dose_response(model, ids[0], layer=layer, edge=edge, doses=doses,
                                       target_token=args.target)
    data = {"prompt": args.prompt, **curve.to_dict(), "target": args.target,
            "scale_for_double_attention": curve.scale_for_target(calibration.source_baseline)}
    if plot_file is not None:
        from ...plots import plot_curve

        data["plot"] = plot_curve([p.scale for p in curve.points],
                                  [p.kl for p in curve.points], plot_file, xlabel="dose (scale)",
                                  ylabel="KL(baseline || steered)",
                                  title=f"dose-response, layer {layer}, edge {edge}")
    if args.json:
        emit_json(data)
        return 0
    table = Table(title=f"Dose-response: edge {edge[0]}->{edge[1]} at layer {layer} "
                        f"(baseline attention {curve.baseline_attention:.4f})")
    for col in ("dose", "attention", "KL", "target logit change (steered - baseline)"):
        table.add_column(col, justify="right")
    for p in curve.points:  # DoseResponsePoint.logit_diff is baseline - steered
        diff = "" if p.logit_diff is None else f"{-p.logit_diff:+.4f}"
        table.add_row(f"{p.scale:g}", f"{p.attention_level:.4f}", f"{p.kl:.6f}", diff)
    console.print(table)
    console.print(f"scale reaching 2x baseline attention: {data['scale_for_double_attention']}")
    if "plot" in data:
        console.print(f"curve written to {data['plot']}")
    return 0


def _vector_mode(args, model, layer: int) -> int:
    vector = mean_difference_vector(model, args.positive, args.negative, layer)
    relative = args.scale_mode == "relative"
    hooks = steering_vector_hooks(vector, [layer], scale=args.scale, relative=relative)
    point = HookPoint.ResidPost(layer)
    resid = model.forward(model.encode(args.prompt), HookSpec().capture(point))[point]
    resid_norm = float(resid[0].float().norm(dim=-1).mean())  # mean over prompt positions
    added = abs(args.scale) * (resid_norm if relative else float(vector.norm()))
    base = model.generate(args.prompt, args.max_new_tokens)
    steered = model.generate(args.prompt, args.max_new_tokens, hooks=hooks)
    data = {"prompt": args.prompt, "layer": layer, "scale": args.scale,
            "scale_mode": args.scale_mode, "vector_norm": float(vector.norm()),
            "residual_norm": resid_norm, "added_norm_over_residual_norm": added / resid_norm,
            "baseline": base.generated_text, "steered": steered.generated_text}
    if args.json:
        emit_json(data)
    else:
        console.print(f"layer {layer}, scale {args.scale} ({args.scale_mode}), "
                      f"|v| = {data['vector_norm']:.3f}, mean residual norm "
                      f"{resid_norm:.3f}: the added vector is "
                      f"{data['added_norm_over_residual_norm']:.2f}x the residual norm")
        console.print(f"baseline: {base.generated_text!r}")
        console.print(f"steered:  {steered.generated_text!r}")
    return 0
