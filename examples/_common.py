"""Shared argument parsing and output for the example scripts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch_mi as mi


def setup(description: str) -> tuple[mi.MIModel, Path, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2")
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--out", default="out")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return mi.MIModel.from_pretrained(args.model), out, args


def save(out: Path, name: str, data: dict) -> None:
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    print(f"[saved {path}]")
