"""``torch-mi inspect``: config, hook points with shapes, compatibility report."""

from __future__ import annotations

import argparse
import dataclasses
import json
from enum import Enum
from pathlib import Path

from rich.table import Table

from ...errors import InputError
from ..common import add_model_args, console, emit_json, load_model


def register(sub) -> None:
    p = sub.add_parser("inspect", help="show config, hook points and compatibility")
    p.add_argument("--layers", type=int, default=1,
                   help="list hook points of the first N layers (0: model-wide points only; "
                        "all: -1)")
    add_model_args(p)
    p.set_defaults(run=run)


def _plain(value):
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _report(model) -> str | None:
    """Compatibility report for HF folders (known families pass trivially). The auto-config
    report is about GenericTransformer only: another backend (RWKV) got here through its
    registry row with strict key accounting, so loading it was the check."""
    from ...backends.transformer import GenericTransformer

    if not isinstance(model.backend, GenericTransformer):
        return (f"model is compatible with {type(model.backend).__name__} "
                f"({model.config.model_type}): every tensor was accounted for at load")
    source = Path(str(model.source or ""))
    if not (source / "config.json").exists():
        return None
    from ...backends.transformer import check_auto_compatibility
    from ...loading.safetensors_io import SafetensorsSource

    hf = json.loads((source / "config.json").read_text())
    with SafetensorsSource.from_directory(source) as weights:
        return str(check_auto_compatibility(hf, list(weights.names())))


def run(args: argparse.Namespace) -> int:
    if args.layers < -1:
        raise InputError(f"--layers must be a count >= 0, or -1 for every layer, got "
                         f"{args.layers}")
    model = load_model(args)
    config = {f.name: _plain(getattr(model.config, f.name))
              for f in dataclasses.fields(model.config)}
    n = model.num_layers if args.layers < 0 else min(args.layers, model.num_layers)
    points = [(str(p), list(s)) for p, s in model.hook_points().items()
              if p.layer is None or p.layer < n]
    params = sum(p.numel() for p in model.backend.parameters())
    info = {"source": model.source, "device": str(model.device), "dtype": str(model.dtype),
            "parameters": params, "config": config, "hook_points_total": len(model.hook_points()),
            "hook_points": points, "compatibility": _report(model)}
    if args.json:
        emit_json(info)
        return 0
    table = Table(title=f"{model.config.model_type} - {params:,} parameters, {model.dtype}, "
                        f"{model.device}")
    table.add_column("field")
    table.add_column("value")
    for key, value in config.items():
        table.add_row(key, str(value))
    console.print(table)
    hooks = Table(title=f"hook points ({len(model.hook_points())} in all; first {n} layer(s))")
    hooks.add_column("point")
    hooks.add_column("shape")
    for name, shape in points:
        hooks.add_row(name, str(shape))
    console.print(hooks)
    if info["compatibility"]:
        console.print(info["compatibility"])
    return 0
