"""``torch-mi harvest``: capture hook points over a dataset into a shard folder, and
``torch-mi harvest inspect DIR``: its manifest, size and checksum verification."""

from __future__ import annotations

import argparse

from rich.table import Table

from ...errors import InputError
from ..checks import at_least
from ..common import add_model_args, console, emit_json, load_model


def register(sub) -> None:
    p = sub.add_parser("harvest", help="capture activations over a dataset into shards "
                                       "(or: harvest inspect DIR)")
    p.add_argument("action", nargs="*", metavar="inspect DIR",
                   help="'inspect DIR' shows a harvest folder instead of running one")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="text file or folder, .jsonl, .parquet, or a saved HF dataset")
    p.add_argument("--points", default=None, metavar="P1,P2",
                   help="comma-separated hook points, e.g. blocks.3.hook_resid_post")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (resumes)")
    p.add_argument("--engine", default="local", choices=("local", "ray"))
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--mode", default="pack", choices=("pack", "pad"),
                   help="pack documents (SAELens convention) or one padded row per document")
    p.add_argument("--positions", default="all", help="all, last or start:stop[:step]")
    p.add_argument("--store-dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--text-field", default="text", help="JSONL / Parquet / HF text field")
    p.add_argument("--dict", dest="dicts", action="append", default=[], metavar="PATH",
                   help="SAE or transcoder folder whose features to harvest (repeatable)")
    add_model_args(p)
    p.set_defaults(run=run)


def _inspect(args: argparse.Namespace, target: str) -> int:
    from ...harvest import inspect_harvest

    data = inspect_harvest(target)
    if args.json:
        emit_json(data)
        return 0 if data["verified"] else 1
    table = Table(title=f"harvest {data['path']} ({data['status']})", show_header=False)
    rows = [("model", f"{data['model']['source']} ({data['model']['model_type']})"),
            ("weight hash", data["model"]["weight_hash"][:16]),
            ("dataset", f"{data['dataset']['name']} ({data['dataset']['kind']})"),
            ("points", ", ".join(f"{p['name']} {p['shape']}" for p in data["points"])),
            ("positions / dtype", f"{data['positions']['mode']} / {data['dtype']}"),
            ("packing / seq_len", f"{data['packing']} / {data['seq_len']}"),
            ("dictionaries", ", ".join(data["dictionaries"]) or "-"),
            ("size", f"{data['shards']} shards, {data['sequences']} sequences, "
                     f"{data['tokens']} tokens, {data['bytes'] / 2**20:.1f} MiB"),
            ("verified", "yes" if data["verified"] else f"NO: {data['bad_shards'][:5]}")]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    return 0 if data["verified"] else 1


def run(args: argparse.Namespace) -> int:
    if args.action:
        if len(args.action) != 2 or args.action[0] != "inspect":
            raise InputError("usage: torch-mi harvest inspect DIR, or torch-mi harvest "
                             "--data PATH --points P --out DIR")
        return _inspect(args, args.action[1])
    for flag, value in (("--data", args.data), ("--points", args.points), ("--out", args.out)):
        if not value:
            raise InputError(f"torch-mi harvest needs {flag}")
    for flag, value in (("--seq-len", args.seq_len), ("--batch-size", args.batch_size),
                        ("--workers", args.workers)):
        at_least(flag, value, 1)
    from ...harvest import harvest

    model = load_model(args)
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    result = harvest(model, args.data, points, args.out, seq_len=args.seq_len,
                     batch_size=args.batch_size, positions=args.positions,
                     dtype=args.store_dtype, max_tokens=args.max_tokens, engine=args.engine,
                     dictionaries=args.dicts or None, mode=args.mode,
                     text_field=args.text_field,
                     ray_options={"num_workers": args.workers} if args.engine == "ray" else None,
                     progress=None if not args.json else False)
    m = result.manifest
    data = {"out": str(result.out_dir), "shards": len(m["shards"]), "written": result.written,
            "skipped": result.skipped, "sequences": m["num_sequences"],
            "tokens": m["num_tokens"], "status": m["status"]}
    if args.json:
        emit_json(data)
    else:
        console.print(f"harvest: {data['tokens']} tokens in {data['shards']} shards "
                      f"({data['written']} written, {data['skipped']} kept) -> {data['out']}")
    return 0
