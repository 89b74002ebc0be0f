"""``harvest``: capture hook points (and dictionary features) over a dataset into shards.

Flow: check every argument and open the dataset (all files hashed) before touching the
output folder; build the plan and the manifest's identity; on an existing folder check it
is the same harvest and keep every shard whose checksum verifies; then let the engine
produce the missing shards, rewriting the manifest after each; finally merge the feature
statistics. See :mod:`torch_mi.harvest` for the file layout.
"""

from __future__ import annotations

import inspect
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import HookError, InputError, did_you_mean
from ..hooks.points import HookPoint, as_point
from .errors import DatasetError, HarvestError
from .manifest import (
    JOURNAL,
    append_journal,
    check_compatible,
    model_entry,
    new_manifest,
    read_manifest,
    remove_stale_temporaries,
    tokenizer_entry,
    verified_shards,
    weight_hash,
    write_manifest,
)
from .plan import DictionarySpec, HarvestPlan, Positions, store_dtype
from .progress import HarvestProgress
from .sequences import ShardInput, packed_sequences, packing_rule, padded_sequences, shard_inputs
from .shard import ShardRecord
from .sources import Dataset

ENGINES = ("local", "ray")
DEFAULT_SHARD_TOKENS = 8192


@dataclass
class HarvestResult:
    """Where the harvest went and what it holds."""

    out_dir: Path
    manifest: dict
    written: int  # shards computed by this call
    skipped: int  # shards kept from an earlier run (checksums verified)


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _points(model, points: Sequence[object]) -> tuple[list[HookPoint], list[tuple[int, ...]]]:
    """Parsed points and their trailing shapes; HookError for a point the model lacks."""
    if isinstance(points, (str, HookPoint)):
        points = [points]
    if not points:
        raise InputError("points must name at least one hook point, e.g. "
                         "'blocks.3.hook_resid_post'")
    table = model.hook_points()
    parsed, shapes = [], []
    for raw in points:
        point = as_point(raw)
        if point not in table:
            raise HookError(f"this model has no hook point '{point}'."
                            + did_you_mean(str(point), (str(p) for p in table))
                            + " (torch-mi inspect lists them)")
        shape = tuple(table[point])
        if shape[:2] != ("batch", "seq") or any(not isinstance(d, int) for d in shape[2:]):
            raise HookError(f"hook point '{point}' has shape {shape}: only [batch, seq, ...] "
                            f"points with fixed trailing sizes can be harvested")
        if point not in parsed:
            parsed.append(point)
            shapes.append(tuple(int(d) for d in shape[2:]))
    return parsed, shapes


def _dictionaries(model, dictionaries) -> tuple[list, list[DictionarySpec]]:
    from ..dictionaries import CrossLayerTranscoder, SparseAutoencoder

    objects, specs = [], []
    for item in dictionaries or ():
        source = None
        layers: list[int | None] = [None]
        if isinstance(item, tuple):  # (transcoder, layers)
            item, layers = item[0], list(item[1])
        if isinstance(item, (str, os.PathLike)):
            source = str(Path(item).resolve())
            item = (SparseAutoencoder.from_local(item) if (Path(item) / "cfg.json").is_file()
                    else CrossLayerTranscoder.from_local(item))
        if isinstance(item, SparseAutoencoder):
            point = item.hook_point
            _points(model, [point])
            objects.append(item)
            specs.append(DictionarySpec(f"sae.{point}", "sae", source, str(point), None,
                                        item.d_sae))
        elif isinstance(item, CrossLayerTranscoder):
            cfg = item.config
            for layer in (range(cfg.n_layers) if layers == [None] else layers):
                point = cfg.input_point(layer)
                _points(model, [point])
                objects.append(item)
                specs.append(DictionarySpec(f"clt.{layer}", "clt", source, str(point), layer,
                                            cfg.n_features_per_layer))
        else:
            raise InputError(f"dictionaries must hold SparseAutoencoder / CrossLayerTranscoder "
                             f"objects or folders, got {type(item).__name__}")
    return objects, specs


def _stop_layer(model, points: list[HookPoint]) -> int | None:
    """Blocks the captures need (early exit), when the backend supports it."""
    accepts = "stop_at_layer" in inspect.signature(model.backend.forward).parameters
    if not accepts or any(p.layer is None and p != HookPoint.Embed for p in points):
        return None
    return max([p.layer for p in points if p.layer is not None], default=0) + 1


def build_plan(model, points, *, seq_len: int, batch_size: int, positions, dtype, mode: str,
               shard_tokens: int, dictionaries, top_k: int
               ) -> tuple[HarvestPlan, list]:
    """The plan (checked) and the dictionary objects, before any file is touched."""
    _positive("seq_len", seq_len, 2)
    _positive("batch_size", batch_size)
    _positive("shard_tokens", shard_tokens)
    _positive("top_k", top_k)
    parsed, shapes = _points(model, points)
    chosen = Positions.parse(positions)
    chosen.indices(seq_len)  # an empty slice fails here
    objects, specs = _dictionaries(model, dictionaries)
    tokenizer = model.require_tokenizer()
    plan = HarvestPlan(
        points=tuple(str(p) for p in parsed), point_shapes=tuple(shapes), positions=chosen,
        dtype=store_dtype(dtype), seq_len=seq_len, batch_size=batch_size,
        seqs_per_shard=max(1, shard_tokens // seq_len),
        packing=packing_rule(tokenizer, mode, seq_len), dictionaries=tuple(specs), top_k=top_k,
        stop_at_layer=_stop_layer(model, parsed + [as_point(s.point) for s in specs]),
        model_load={"source": getattr(model, "source", None),
                    "dtype": str(model.dtype).removeprefix("torch."),
                    "device": model.device.type})
    return plan, objects


def iter_shard_inputs(model, dataset: Dataset, plan: HarvestPlan, max_tokens: int | None
                      ) -> Iterator[tuple[ShardInput, int]]:
    """The shard inputs in order (sequence i -> shard i // seqs_per_shard)."""
    tokenizer = model.require_tokenizer()
    build = padded_sequences if plan.padded else packed_sequences
    limit = None if max_tokens is None else max_tokens // plan.seq_len
    return shard_inputs(build(tokenizer, dataset.documents(), plan.packing),
                        plan.seqs_per_shard, limit)


def harvest(model, dataset: str | os.PathLike, points, out_dir: str | os.PathLike, *,
            seq_len: int = 128, batch_size: int = 8, positions="all", dtype="float32",
            max_tokens: int | None = None, engine: str = "local", dictionaries=None,
            mode: str = "pack", shard_tokens: int = DEFAULT_SHARD_TOKENS,
            text_field: str = "text", top_k: int = 10, progress: bool | None = None,
            ray_options: dict | None = None) -> HarvestResult:
    """Capture ``points`` over ``dataset`` into ``out_dir`` (see the module docstring).

    ``mode``: "pack" (documents joined, SAELens convention) or "pad" (one left-padded
    sequence per document). ``positions``: "all", "last" or a slice. ``dictionaries``:
    SAEs / transcoders (objects or folders; ``(transcoder, layers)`` for some layers) whose
    features are stored sparsely with statistics. ``engine="ray"`` runs on Ray Data
    (``ray_options``: num_workers, num_cpus, num_gpus, address). A rerun resumes.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, got {engine!r}")
    if max_tokens is not None:
        _positive("max_tokens", max_tokens, seq_len if isinstance(seq_len, int) else 1)
    plan, objects = build_plan(model, points, seq_len=seq_len, batch_size=batch_size,
                               positions=positions, dtype=dtype, mode=mode,
                               shard_tokens=shard_tokens, dictionaries=dictionaries, top_k=top_k)
    data = Dataset(dataset, text_field=text_field)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise HarvestError(f"output path {out} is a file; give a folder")
    identity = {"model": model_entry(model, weight_hash(model)),
                "tokenizer": tokenizer_entry(model.require_tokenizer()),
                "dataset": {**data.describe(), "max_tokens": max_tokens},
                "plan": plan.to_json()}
    manifest = new_manifest(identity)
    existing = read_manifest(out) if out.is_dir() else None
    done: dict[int, ShardRecord] = {}
    if existing is not None:
        check_compatible(existing, manifest, out)
        done = verified_shards(out, existing)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    try:
        return _run(model, data, plan, objects, out, manifest, done, max_tokens, engine,
                    progress, ray_options or {})
    except BaseException:
        if created and not any(out.glob("shard-*")):  # a folder this call made, still empty
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(model, data, plan, objects, out, manifest, done, max_tokens, engine, progress,
         ray_options) -> HarvestResult:
    from .features_report import write_feature_stats

    records: dict[int, ShardRecord] = dict(done)
    counts = {"seqs": 0, "written": 0}
    bar = HarvestProgress(data.total_bytes, max_tokens, plan.seq_len, progress)

    def pending() -> Iterator[ShardInput]:
        for item, consumed in iter_shard_inputs(model, data, plan, max_tokens):
            counts["seqs"] = item.first_seq + item.ids.shape[0]
            bar.consumed(consumed)
            if item.index in done and done[item.index].num_seqs == item.ids.shape[0]:
                bar.skipped(item.ids.numel())
                continue
            yield item

    def on_record(record: ShardRecord) -> None:
        records[record.index] = record
        counts["written"] += 1
        bar.advance(record.num_tokens)
        append_journal(out, record)

    manifest["shards"] = [records[i].to_json() for i in sorted(records)]
    write_manifest(out, manifest)  # status "partial" until the end; progress in the journal
    try:
        if engine == "local":
            from .local import run_local

            run_local(model, plan, pending(), out, objects, on_record)
        else:
            from .ray_engine import run_ray

            run_ray(plan, pending(), out, objects, on_record, ray_options,
                    manifest["model"]["weight_hash"])
    finally:
        bar.close()
    remove_stale_temporaries(out)  # a killed (and retried) worker's unfinished file
    if counts["seqs"] == 0:
        raise DatasetError(f"dataset {data.root} yields no sequence of {plan.seq_len} tokens "
                           f"(empty documents, or too little text to fill one packed "
                           f"sequence); give more text, a smaller seq_len or mode='pad'")
    total = counts["seqs"]
    last = (total - 1) // plan.seqs_per_shard
    manifest["shards"] = [records[i].to_json() for i in sorted(records) if i <= last]
    manifest.update(status="complete", num_sequences=total, num_tokens=total * plan.seq_len)
    if plan.dictionaries:
        manifest["features_file"] = write_feature_stats(out, manifest, model.require_tokenizer())
    write_manifest(out, manifest)
    (out / JOURNAL).unlink(missing_ok=True)
    return HarvestResult(out, manifest, counts["written"], len(done))
