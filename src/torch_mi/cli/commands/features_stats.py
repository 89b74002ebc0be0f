"""``torch-mi features --stats DIR [--cards N]``: the merged feature statistics of a harvest
folder (frequency, mean, max, dead features, the most frequent features and their top
context), and HTML cards of the most frequent features on request."""

from __future__ import annotations

import argparse

from rich.table import Table

from ...harvest import read_feature_stats, write_feature_card
from ..checks import at_least
from ..common import console, emit_json


def _summary(d: dict, top: int) -> dict:
    feats = sorted(d["features"], key=lambda f: (-f["count"], f["index"]))[:top]
    return {"name": d["name"], "point": d["point"], "num_features": d["num_features"],
            "positions": d["positions"], "num_dead": len(d["dead"]), "dead": d["dead"],
            "most_frequent": [{k: f[k] for k in ("index", "frequency", "mean_active", "max")}
                              | {"context": "".join(f["top"][0]["text"]) if f["top"] else ""}
                              for f in feats]}


def run_stats(args: argparse.Namespace) -> int:
    at_least("--top-k", args.top_k, 1)
    at_least("--cards", args.cards, 0)
    report = read_feature_stats(args.stats)
    data = {"path": args.stats, "dictionaries": [_summary(d, max(args.top_k, args.cards))
                                                 for d in report["dictionaries"]]}
    for d in data["dictionaries"]:  # cards of the most frequent features (never of dead ones)
        live = [f["index"] for f in d["most_frequent"] if f["frequency"] > 0][:args.cards]
        d["cards"] = [str(write_feature_card(args.stats, i, dictionary=d["name"]))
                      for i in live]
        d["most_frequent"] = d["most_frequent"][:args.top_k]
    if args.json:
        emit_json(data)
        return 0
    for d in data["dictionaries"]:
        table = Table(title=f"{d['name']}: {d['num_features']} features over {d['positions']} "
                            f"positions, {d['num_dead']} dead")
        for col in ("feature", "frequency", "mean (active)", "max", "top context"):
            table.add_column(col)
        for f in d["most_frequent"]:
            table.add_row(str(f["index"]), f"{f['frequency']:.4g}", f"{f['mean_active']:.4g}",
                          f"{f['max']:.4g}", repr(f["context"]))
        console.print(table)
        for card in d["cards"]:
            console.print(f"card: {card}")
    return 0
