"""manifest.json: what a harvest folder holds, written atomically after every shard.

The manifest has an *identity* part (model, tokenizer, dataset, points, positions, dtype,
sequence and shard sizes, packing, dictionaries: everything that decides the bytes of a
shard) and a *progress* part (status, shard list with checksums, totals). Nothing in it
depends on the engine, host or clock, so equal work gives equal files.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import weakref
from pathlib import Path

import torch

from .errors import HarvestError, ManifestMismatchError, ShardCorruptError
from .shard import ShardRecord, sha256_file

MANIFEST = "manifest.json"
JOURNAL = "shards.journal"  # one JSON line per finished shard; gone when the run completes
FORMAT = "torch-mi-harvest"
VERSION = 1
IDENTITY = ("format", "version", "model", "tokenizer", "dataset", "plan")


_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backend -> (ids, hash)


def weight_hash(model) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes) in name order:
    the weights that actually ran, whatever file they came from. Cached per model while
    no tensor is replaced or changed in place (torch bumps ``_version`` on every write)."""
    backend = getattr(model, "backend", model)
    state = backend.state_dict() if isinstance(backend, torch.nn.Module) else {}
    identity = tuple((name, t.data_ptr(), t._version) for name, t in sorted(state.items()))
    try:
        cached = _HASHES.get(backend)
    except TypeError:  # not weak-referenceable: no cache
        return _digest(state)
    if cached is not None and cached[0] == identity:
        return cached[1]
    _HASHES[backend] = (identity, _digest(state))
    return _HASHES[backend][1]


def _digest(state: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy
    return digest.hexdigest()


def tokenizer_entry(tokenizer) -> dict:
    inner = getattr(tokenizer, "inner", None)
    text = inner.to_str() if hasattr(inner, "to_str") else repr(tokenizer)
    return {"hash": hashlib.sha256(text.encode()).hexdigest(),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_ids": list(tokenizer.eos_token_ids),
            "padding_id": int(tokenizer.padding_id), "vocab_size": tokenizer.vocab_size}


def model_entry(model, weights: str) -> dict:
    cfg = getattr(model, "config", None)
    return {"source": getattr(model, "source", None),
            "model_type": getattr(cfg, "model_type", type(model.backend).__name__),
            "dtype": str(model.dtype).removeprefix("torch."), "num_layers": model.num_layers,
            "hidden_size": model.hidden_size, "vocab_size": model.vocab_size,
            "weight_hash": weights}


def new_manifest(identity: dict) -> dict:
    manifest = {"format": FORMAT, "version": VERSION, **identity, "status": "partial",
                "num_sequences": None, "num_tokens": None, "shards": []}
    return json.loads(json.dumps(manifest))  # tuples -> lists: as a reread manifest reads


def read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HarvestError(f"{path} is not a readable harvest manifest ({exc}); move it away "
                           f"or choose another output folder") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HarvestError(f"{path} is not a torch-mi harvest manifest; choose another "
                           f"output folder")
    return data


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """Write to a temporary file and rename over the old manifest (never half-written)."""
    text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n"
    tmp = out_dir / f".{MANIFEST}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out_dir / MANIFEST)


def _first_difference(old: object, new: object, where: str) -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{where}.{key}")
            if found:
                return found
        return None
    return None if old == new else f"{where}: {str(old)[:60]} (existing) vs {str(new)[:60]}"


def check_compatible(existing: dict, manifest: dict, out_dir: Path) -> None:
    """ManifestMismatchError naming the first field where the folder's harvest differs."""
    for key in IDENTITY:
        diff = _first_difference(existing.get(key), manifest.get(key), key)
        if diff:
            raise ManifestMismatchError(
                f"{out_dir} already holds a harvest that differs in {diff}; choose another "
                f"output folder (nothing was changed)")


def append_journal(out_dir: Path, record: ShardRecord) -> None:
    """Record a finished shard in O(1) (the manifest's list is written at the end)."""
    with open(out_dir / JOURNAL, "a") as handle:
        handle.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def listed_shards(out_dir: Path, manifest: dict) -> list[dict]:
    """The manifest's shards plus those journaled by an unfinished run (a torn last line,
    from a kill mid-append, is ignored)."""
    shards = manifest.get("shards", [])
    if not isinstance(shards, list) or not all(isinstance(e, dict) for e in shards):
        raise ShardCorruptError("the manifest's shard list is malformed; rerun the harvest "
                                "into a new folder")
    entries = {}
    for entry in shards:
        try:
            entries[ShardRecord(**entry).index] = entry
        except TypeError:
            raise ShardCorruptError(f"a shard record of the manifest is malformed "
                                    f"({str(entry)[:160]}); rerun the harvest into a new "
                                    f"folder") from None
    journal = out_dir / JOURNAL
    if journal.is_file():
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
                ShardRecord(**entry)
            except (ValueError, TypeError, ShardCorruptError):  # a torn or damaged line
                continue
            entries[entry["index"]] = entry
    return [entries[i] for i in sorted(entries)]


def verified_shards(out_dir: Path, existing: dict) -> dict[int, ShardRecord]:
    """Listed shards whose file exists and whose sha256 matches the manifest."""
    good = {}
    for entry in listed_shards(out_dir, existing):
        record = ShardRecord(**entry)
        path = out_dir / record.file
        if path.is_file() and path.stat().st_size == record.bytes \
                and sha256_file(path) == record.sha256:
            good[record.index] = record
    return good


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files left by a killed run (never renamed, so never listed)."""
    for path in out_dir.glob(".shard-*.tmp-*"):
        path.unlink(missing_ok=True)
    for path in out_dir.glob(f".{MANIFEST}.tmp-*"):
        path.unlink(missing_ok=True)
