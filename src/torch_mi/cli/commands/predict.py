"""``torch-mi predict``: top-k next tokens."""

from __future__ import annotations

import argparse

import torch
from rich.table import Table

from ...interp.logit_lens import format_probability, format_token
from ..checks import at_least
from ..common import add_model_args, console, emit_json, load_model


def register(sub) -> None:
    p = sub.add_parser("predict", help="top-k next-token predictions")
    p.add_argument("prompt")
    p.add_argument("--top-k", type=int, default=10)
    add_model_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    at_least("--top-k", args.top_k, 1)
    model = load_model(args)
    tok = model.require_tokenizer()
    ids = model.encode(args.prompt)
    logits = model.forward(ids, last_logits_only=True).output()[0, -1].float()
    probs = torch.softmax(logits, dim=-1)
    top = probs.topk(min(args.top_k, probs.shape[-1]))
    rows = [{"rank": r + 1, "token_id": int(i), "token": tok.decode_token(int(i)),
             "probability": float(p), "logit": float(logits[i])}
            for r, (p, i) in enumerate(zip(top.values, top.indices, strict=True))]
    if args.json:
        emit_json({"prompt": args.prompt, "input_ids": ids[0].tolist(), "predictions": rows})
        return 0
    table = Table(title=f"Next token after {args.prompt!r}")
    for col in ("rank", "token", "id", "p", "logit"):
        table.add_column(col, justify="right" if col != "token" else "left")
    for row in rows:
        table.add_row(str(row["rank"]), repr(format_token(row["token"])), str(row["token_id"]),
                      format_probability(row["probability"]), f"{row['logit']:.3f}")
    console.print(table)
    return 0
