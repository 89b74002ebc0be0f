"""``torch-mi knockout``: remove an attention edge and measure what changes."""

from __future__ import annotations

import argparse

from rich.table import Table

from ...errors import InputError
from ...interp.knockout import KnockoutSpec, run_knockout
from ...interp.logit_lens import format_probability, format_token
from ..checks import at_least, indices_below, int_list, non_empty
from ..common import add_model_args, console, emit_json, load_model, parse_layer


def register(sub) -> None:
    p = sub.add_parser("knockout", help="attention knockout: KL and top changed tokens")
    p.add_argument("prompt")
    p.add_argument("--layer", default=None, help="layer (default: the middle layer)")
    p.add_argument("--edge", default=None, metavar="FROM,TO",
                   help="query,key positions (default: last,0; negatives count from the end)")
    p.add_argument("--heads", default=None, help="comma-separated heads (default: all)")
    p.add_argument("--target", default=None,
                   help="token whose probability is reported; must be one token, with or "
                        "without its leading space (default: the baseline's top token)")
    p.add_argument("--top-k", type=int, default=10)
    add_model_args(p)
    p.set_defaults(run=run)


def parse_edge(text: str | None, seq_len: int) -> tuple[int, int]:
    """``--edge FROM,TO`` as causal (query, key) positions; negatives count from the end."""
    if text is None:
        return seq_len - 1, 0
    values = int_list("--edge", text)
    if values is None or len(values) != 2:
        raise InputError(f"--edge must be FROM,TO integers, got {text!r}")
    a, b = values
    a, b = (a + seq_len if a < 0 else a), (b + seq_len if b < 0 else b)
    if not (0 <= b <= a < seq_len):
        raise InputError(f"--edge {text}: ({a},{b}) is not a causal edge of a {seq_len}-token "
                         f"prompt (need 0 <= TO <= FROM < {seq_len})")
    return a, b


def run(args: argparse.Namespace) -> int:
    at_least("--top-k", args.top_k, 1)
    non_empty("--target", args.target)
    heads = int_list("--heads", args.heads)
    model = load_model(args)
    tok = model.require_tokenizer()
    ids = model.encode(args.prompt)
    seq_len = ids.shape[1]
    layer = parse_layer(args.layer, model.num_layers, model.num_layers // 2)
    src, dst = parse_edge(args.edge, seq_len)
    spec = KnockoutSpec().layer(layer).edge(src, dst)
    if heads is not None:
        indices_below("--heads", heads, model.num_heads, "attention heads")
        spec.heads(heads)
    result = run_knockout(model, ids[0], spec)
    p_base, p_abl = result.probabilities()
    if args.target is None:
        tid = int(p_base.argmax())
        target = tok.decode_token(tid)
    else:
        target, tid = args.target, tok.find_token_id(args.target.strip())  # strict: one token
    data = {"prompt": args.prompt, "layer": layer, "edge": [src, dst],
            "edge_tokens": [tok.decode_token(int(ids[0, src])), tok.decode_token(int(ids[0, dst]))],
            "heads": "all" if heads is None else heads,
            "target": target, "target_id": tid,
            "p_target_baseline": float(p_base[tid]), "p_target_ablated": float(p_abl[tid]),
            # ablated - baseline: negative when the knockout lowers the target (the library's
            # LogitComparison.logit_diff is baseline - other, as in candle-mi)
            "target_logit_change": -result.logit_diff(tid),
            **result.to_dict(tok.decode_token, args.top_k)}
    if args.json:
        emit_json(data)
        return 0
    console.print(f"Knockout of edge {src}->{dst} ({data['edge_tokens'][0]!r} -> "
                  f"{data['edge_tokens'][1]!r}) at layer {layer}, heads {data['heads']}")
    console.print(f"KL(baseline || ablated) = {data['kl_divergence']:.6f}")
    console.print(f"P({format_token(target)!r}): {format_probability(data['p_target_baseline'])}"
                  f" -> {format_probability(data['p_target_ablated'])} "
                  f"(logit change, ablated - baseline: {data['target_logit_change']:+.4f})")
    table = Table(title="top changed tokens")
    for col in ("token", "baseline", "ablated", "|dp|"):
        table.add_column(col, justify="left" if col == "token" else "right")
    for row in data["top_changed"]:
        table.add_row(repr(format_token(row["token"])), format_probability(row["p_baseline"]),
                      format_probability(row["p_intervened"]), f"{row['abs_delta']:.5f}")
    console.print(table)
    return 0
