"""``inspect_harvest``: what a harvest folder holds and whether its shards verify."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import HarvestError
from .manifest import listed_shards, read_manifest, verified_shards


def inspect_harvest(out_dir: str | os.PathLike, *, verify: bool = True) -> dict:
    """Summary of a harvest folder: model, points, sizes, status and (with ``verify``)
    which listed shards are missing or fail their checksum."""
    root = Path(out_dir).expanduser()
    manifest = read_manifest(root) if root.is_dir() else None
    if manifest is None:
        raise HarvestError(f"{root} holds no harvest (no manifest.json)")
    plan = manifest["plan"]
    shards = listed_shards(root, manifest)  # with a running / killed run's journal
    summary = {
        "path": str(root), "status": manifest["status"],
        "model": {k: manifest["model"][k] for k in ("source", "model_type", "weight_hash")},
        "dataset": {k: manifest["dataset"][k] for k in ("kind", "name", "fingerprint")},
        "points": [{"name": p, "shape": s} for p, s in zip(plan["points"], plan["point_shapes"],
                                                           strict=True)],
        "positions": plan["positions"], "dtype": plan["dtype"], "seq_len": plan["seq_len"],
        "packing": plan["packing"]["mode"],
        "dictionaries": [d["name"] for d in plan["dictionaries"]],
        "shards": len(shards), "sequences": sum(e["num_seqs"] for e in shards),
        "tokens": sum(e["num_tokens"] for e in shards),
        "bytes": sum(e["bytes"] for e in shards),
    }
    if verify:
        good = verified_shards(root, manifest)
        summary["bad_shards"] = [e["file"] for e in shards if e["index"] not in good]
        summary["verified"] = not summary["bad_shards"]
    return summary
