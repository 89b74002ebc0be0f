"""Shared CLI plumbing: model options, loading with a spinner, JSON or rich output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from ..errors import InputError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help="Hub repo id, local folder or .gguf file (default: the embedded "
                             "SmolLM2-135M-Instruct)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default=None, help="float32 (default), bfloat16 or float16")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def load_model(args: argparse.Namespace):
    from ..model import MIModel

    label = args.model or "the embedded SmolLM2-135M-Instruct"
    with err_console.status(f"Loading {label} ..."):
        return MIModel.from_pretrained(args.model, revision=args.revision, device=args.device,
                                       dtype=args.dtype)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def shown(token: str) -> str:
    """A token as a quoted, escaped, one-line string."""
    return repr(token)


def parse_layer(value: str | None, n_layers: int, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise InputError("a layer index is required (--layer)")
        return default
    try:
        layer = int(value)
    except ValueError:
        raise InputError(f"--layer must be an integer, got {value!r}") from None
    if layer < 0:
        layer += n_layers
    if not 0 <= layer < n_layers:
        raise InputError(f"layer {value} is out of range: the model has {n_layers} layers "
                         f"(0..{n_layers - 1}; negative values count from the end)")
    return layer
