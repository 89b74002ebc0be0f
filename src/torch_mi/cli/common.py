"""Shared CLI plumbing: model options, loading with a spinner, JSON or rich output."""

from __future__ import annotations

import argparse
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import InputError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help="Hub repo id, local folder, .gguf file or RWKV .pth (default: "
                             "the embedded SmolLM2-135M-Instruct)")
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


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become null (JSON has no such
    numbers; Python's json would print a bare ``NaN`` that other parsers reject), tuples
    lists, paths and enums their text, tensors and numpy scalars plain numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return json_safe(value.tolist())
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def emit_json(data: Any) -> None:
    """Print ``data`` as strict JSON (``allow_nan=False`` is the last guard)."""
    text = json.dumps(json_safe(data), ensure_ascii=False, indent=2, allow_nan=False)
    sys.stdout.write(text + "\n")


def checked_plot(args: argparse.Namespace) -> str | None:
    """The ``--plot`` file name, checked before the model loads (see ``plots.plot_path``)."""
    if getattr(args, "plot", None) is None:
        return None
    from ..plots import plot_path

    return str(plot_path(args.plot, "--plot"))


def shown(token: str) -> str:
    """A token as a quoted, escaped, one-line string."""
    return repr(token)


def parse_layer(value: str | None, n_layers: int, default: int | None = None) -> int:
    """``--layer`` as an index in [0, n_layers): ASCII digits only (no '١'), negatives count
    from the end, a 5000-digit number is out of range (not a ValueError from int())."""
    if value is None:
        if default is None:
            raise InputError("a layer index is required (--layer)")
        return default
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()):
        raise InputError(f"--layer must be an integer such as 3 or -1, got {value!r:.40}")
    layer = int(value) if len(digits) <= 9 else n_layers * 2 + 1  # 5000 digits: out of range
    if layer < 0:
        layer += n_layers
    if not 0 <= layer < n_layers:
        raise InputError(f"--layer {value:.20} is out of range: the model has {n_layers} layers "
                         f"(0..{n_layers - 1}; negative values count from the end)")
    return layer
