"""Merged feature statistics (features.json) and per-feature HTML cards.

Partials live in every shard (``stats.<dict>.*``); they are merged in shard order, so the
file is the same whichever engine or worker wrote the shards. Top contexts are token
windows around each top activation, read back from the shards' token ids.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from safetensors import safe_open

from ..errors import InputError
from .errors import HarvestError
from .stats import FIELDS, HIST_EDGES, FeatureStats, merge_all

FEATURES_FILE = "features.json"
CONTEXT_LEFT, CONTEXT_RIGHT = 8, 4


def merged_stats(out_dir: Path, manifest: dict, name: str) -> FeatureStats:
    """Merge one dictionary's partial statistics over every shard, in shard order."""
    parts = []
    for entry in manifest["shards"]:
        with safe_open(str(out_dir / entry["file"]), framework="pt") as f:
            parts.append(FeatureStats.from_tensors(
                {f"stats.{name}.{k}": f.get_tensor(f"stats.{name}.{k}") for k in FIELDS},
                f"stats.{name}"))
    if not parts:
        raise HarvestError(f"{out_dir} has no shard to take statistics from")
    return merge_all(parts)


def _rows(out_dir: Path, manifest: dict, seqs: set[int]) -> dict[int, tuple[list, list | None]]:
    """(token ids, mask) of the requested sequences."""
    per_shard = manifest["plan"]["seqs_per_shard"]
    by_shard: dict[int, list[int]] = {}
    for s in sorted(seqs):
        by_shard.setdefault(s // per_shard, []).append(s)
    entries = {e["index"]: e for e in manifest["shards"]}
    rows = {}
    for shard, wanted in by_shard.items():
        with safe_open(str(out_dir / entries[shard]["file"]), framework="pt") as f:
            tokens = f.get_tensor("tokens")
            mask = f.get_tensor("attention_mask") if "attention_mask" in f.keys() else None  # noqa: SIM118
        for s in wanted:
            r = s - shard * per_shard
            rows[s] = (tokens[r].tolist(), None if mask is None else mask[r].tolist())
    return rows


def _context(ids: list[int], mask: list[int] | None, pos: int, tokenizer) -> dict:
    lo = max(0, pos - CONTEXT_LEFT)
    if mask is not None:
        while lo < pos and not mask[lo]:
            lo += 1
    window = ids[lo:pos + CONTEXT_RIGHT + 1]
    return {"tokens": window, "text": [tokenizer.decode([t], errors="replace") for t in window],
            "highlight": pos - lo}


def feature_summary(stats: FeatureStats, contexts: dict, index: int) -> dict:
    count, seen = int(stats.count[index]), max(1, int(stats.positions[0]))
    top = []
    for v, s, p in zip(stats.top_val[index].tolist(), stats.top_seq[index].tolist(),
                       stats.top_pos[index].tolist(), strict=True):
        if s >= 0:
            top.append({"value": v, "seq": s, "pos": p, **contexts[(s, p)]})
    total = float(stats.total[index])
    return {"index": index, "count": count, "frequency": count / seen, "mean": total / seen,
            "mean_active": total / count if count else 0.0, "max": float(stats.max[index]),
            "hist": stats.hist[index].tolist(), "top": top}


def write_feature_stats(out_dir: Path, manifest: dict, tokenizer) -> str:
    """Merge every dictionary's statistics and write features.json (atomically)."""
    report = {"format": "torch-mi-harvest-features", "version": 1,
              "hist_edges": HIST_EDGES.tolist(), "context": [CONTEXT_LEFT, CONTEXT_RIGHT],
              "dictionaries": []}
    for spec in manifest["plan"]["dictionaries"]:
        stats = merged_stats(out_dir, manifest, spec["name"])
        wanted = {s for s in stats.top_seq.flatten().tolist() if s >= 0}
        rows = _rows(out_dir, manifest, wanted)
        contexts = {}
        for s, p in zip(stats.top_seq.flatten().tolist(), stats.top_pos.flatten().tolist(),
                        strict=True):
            if s >= 0 and (s, p) not in contexts:
                contexts[(s, p)] = _context(*rows[s], p, tokenizer)
        report["dictionaries"].append({
            **spec, "positions": int(stats.positions[0]), "dead": stats.dead,
            "features": [feature_summary(stats, contexts, i) for i in range(spec["num_features"])]})
    text = json.dumps(report, sort_keys=True, allow_nan=False)
    tmp = out_dir / f".{FEATURES_FILE}.tmp-{os.getpid()}"
    tmp.write_text(text + "\n")
    os.replace(tmp, out_dir / FEATURES_FILE)
    return FEATURES_FILE


def read_feature_stats(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir).expanduser() / FEATURES_FILE
    if not path.is_file():
        raise HarvestError(f"{path} does not exist: harvest with dictionaries= to get feature "
                           f"statistics")
    return json.loads(path.read_text())


def _dictionary(report: dict, name: str | None) -> dict:
    names = [d["name"] for d in report["dictionaries"]]
    if name is None and len(names) == 1:
        name = names[0]
    for d in report["dictionaries"]:
        if d["name"] == name:
            return d
    raise InputError(f"dictionary {name!r} not in this harvest; choose one of {names}")


def write_feature_card(out_dir: str | os.PathLike, index: int, *, dictionary: str | None = None,
                       path: str | os.PathLike | None = None) -> Path:
    """A self-contained HTML page for one feature: statistics, histogram, and its top
    contexts with the max-activating token highlighted (shade = value / feature max)."""
    report = read_feature_stats(out_dir)
    d = _dictionary(report, dictionary)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(d["features"]):
        raise InputError(f"feature index must be in 0..{len(d['features']) - 1}, got {index!r}")
    f = d["features"][index]
    peak = f["max"] or 1.0
    rows = []
    for ctx in f["top"]:
        cells = []
        for i, piece in enumerate(ctx["text"]):
            shade = ctx["value"] / peak if i == ctx["highlight"] else 0.0
            style = f' style="background: rgba(255,120,0,{shade:.3f})"' if shade else ""
            cells.append(f"<span{style}>{html.escape(piece)}</span>")
        rows.append(f"<tr><td>{ctx['value']:.4g}</td><td>{ctx['seq']}:{ctx['pos']}</td>"
                    f"<td class=ctx>{''.join(cells)}</td></tr>")
    bars = "".join(f"<td title='{c}'>{c}</td>" for c in f["hist"])
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(d['name'])} #{index}"
            f"</title><style>body{{font-family:sans-serif}} .ctx{{font-family:monospace;"
            f"white-space:pre}} td{{padding:2px 6px}}</style>"
            f"<h1>{html.escape(d['name'])} feature {index}</h1>"
            f"<p>frequency {f['frequency']:.4g} ({f['count']} of {d['positions']} positions), "
            f"mean {f['mean']:.4g}, mean when active {f['mean_active']:.4g}, max {f['max']:.4g}"
            f"</p><h2>Histogram (log bins)</h2><table><tr>{bars}</tr></table>"
            f"<h2>Top contexts</h2><table>{''.join(rows)}</table>")
    target = Path(path) if path is not None else (
        Path(out_dir) / "cards" / f"{d['name']}-{index}.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page)
    return target
