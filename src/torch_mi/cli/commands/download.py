"""``torch-mi download``: fetch a Hub repo into the standard HF cache."""

from __future__ import annotations

import argparse

from ...download import download_model_blocking
from ..common import console, emit_json


def register(sub) -> None:
    p = sub.add_parser("download", help="download a Hub model into the HF cache")
    p.add_argument("repo_id")
    p.add_argument("--revision", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = download_model_blocking(args.repo_id, revision=args.revision)
    if args.json:
        emit_json({"repo_id": args.repo_id, "path": str(path)})
    else:
        console.print(str(path))
    return 0
