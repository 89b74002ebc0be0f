"""ActivationStore: read a harvest folder back, shard by shard, memory-mapped.

Rows: a point stored with positions "all" or a slice gives one row per (sequence, kept
position), row-major, padding positions left out; with "last" one row per sequence. Rows
are read in slices of ``READ_ROWS`` sequences through ``safe_open`` (the file is mapped,
only the slice is copied), so memory stays bounded by the shuffle buffer and one slice.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ..errors import InputError
from .errors import HarvestError, ShardCorruptError
from .manifest import listed_shards, read_manifest, verified_shards
from .plan import HarvestPlan
from .shard import act_key

READ_ROWS = 256  # sequences read per slice


class ActivationStore:
    """A finished (or partial) harvest: ``store.iter_batches(point, 512, shuffle_buffer=...)``
    feeds training; ``store.probe_features(point)`` feeds :func:`torch_mi.interp.train_probe`
    (which also accepts a store with one point, or ``store.view(point)``)."""

    def __init__(self, out_dir: str | os.PathLike, *, verify: bool = False) -> None:
        self.root = Path(out_dir).expanduser()
        manifest = read_manifest(self.root) if self.root.is_dir() else None
        if manifest is None:
            raise HarvestError(f"{self.root} holds no harvest (no manifest.json); run "
                               f"torch_mi.harvest.harvest(...) or torch-mi harvest first")
        self.manifest = manifest
        self.plan = HarvestPlan.from_json(manifest["plan"])
        self.entries = listed_shards(self.root, manifest)  # a partial run's too
        self.shards = [entry["file"] for entry in self.entries]
        if verify:
            bad = self.verify()
            if bad:
                raise ShardCorruptError(f"{len(bad)} shard(s) of {self.root} fail their "
                                        f"checksum: {bad[:5]}; rerun the harvest to recompute")

    # ---- metadata --------------------------------------------------------------------------
    @property
    def points(self) -> list[str]:
        return list(self.plan.points)

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def num_sequences(self) -> int:
        return sum(entry["num_seqs"] for entry in self.entries)

    def verify(self) -> list[str]:
        """Files of listed shards that are missing or fail their sha256."""
        good = {r.file for r in verified_shards(self.root, self.manifest).values()}
        return [name for name in self.shards if name not in good]

    def _key(self, point: object) -> str:
        text = str(point)
        if text not in self.plan.points:
            raise InputError(f"point {text!r} was not harvested in {self.root}; stored: "
                             f"{list(self.plan.points)}")
        return act_key(text)

    def view(self, point: object) -> StoreView:
        """The rows of one point, as an object probes and loaders accept."""
        self._key(point)
        return StoreView(self, str(point))

    # ---- reading ---------------------------------------------------------------------------
    def _slices(self, key: str, shard_order: list[int]) -> Iterator[torch.Tensor]:
        """Row blocks [r, *shape] of ``key`` (padding positions dropped)."""
        for s in shard_order:
            path = self.root / self.shards[s]
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as exc:  # missing, truncated, not safetensors
                raise ShardCorruptError(f"cannot read shard {path}: {exc}; rerun the harvest "
                                        f"to recompute it") from exc
            with handle as f:
                has_mask = "attention_mask" in f.keys()  # noqa: SIM118 (safe_open: no "in")
                n = f.get_slice("tokens").get_shape()[0]
                for start in range(0, n, READ_ROWS):
                    block = f.get_slice(key)[start:start + READ_ROWS]  # [b, (P,) *shape]
                    yield self._unpad(block, f, start, has_mask)

    def _unpad(self, block: torch.Tensor, f, start: int, has_mask: bool) -> torch.Tensor:
        keep = self.plan.positions.indices(self.plan.seq_len)
        if keep is None:  # "last": one row per sequence, never padding
            return block
        rows = block.reshape(-1, *block.shape[2:])  # [b*P, *shape]
        if not has_mask:
            return rows
        mask = f.get_slice("attention_mask")[start:start + block.shape[0]]  # [b, S]
        return rows[mask[:, keep].reshape(-1).bool()]

    def iter_rows(self, point: object) -> Iterator[torch.Tensor]:
        """Row blocks in storage order."""
        yield from self._slices(self._key(point), list(range(len(self.shards))))

    def iter_batches(self, point: object, batch_size: int, *, shuffle_buffer: int = 0,
                     seed: int = 0, drop_last: bool = False) -> Iterator[torch.Tensor]:
        """Batches [batch_size, *shape]. With ``shuffle_buffer > 0`` shards are visited in a
        seeded random order and rows are drawn at random from a buffer of that many rows
        (same seed, same batches)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) \
                or shuffle_buffer < 0:
            raise InputError(f"shuffle_buffer must be an integer >= 0, got {shuffle_buffer!r}")
        gen = torch.Generator().manual_seed(seed)
        order = list(range(len(self.shards)))
        if shuffle_buffer:
            order = torch.randperm(len(order), generator=gen).tolist()
        pool: torch.Tensor | None = None
        for block in self._slices(self._key(point), order):
            pool = block if pool is None else torch.cat([pool, block])
            ready = (len(pool) - shuffle_buffer) // batch_size * batch_size
            if ready <= 0:
                continue
            if shuffle_buffer:
                pool = pool[torch.randperm(len(pool), generator=gen)]
            yield from pool[:ready].split(batch_size)
            pool = pool[ready:]
        if pool is not None and len(pool):
            if shuffle_buffer:
                pool = pool[torch.randperm(len(pool), generator=gen)]
            for batch in pool.split(batch_size):
                if len(batch) == batch_size or not drop_last:
                    yield batch

    def load(self, point: object) -> torch.Tensor:
        """Every row of ``point`` [N, *shape] in storage order (small harvests, probes)."""
        blocks = list(self.iter_rows(point))
        if not blocks:
            raise HarvestError(f"{self.root} holds no rows yet")
        return torch.cat(blocks)

    def probe_features(self, point: object | None = None) -> np.ndarray:
        """[N, D] float32 features for a probe (rows flattened past the first axis)."""
        if point is None:
            if len(self.plan.points) != 1:
                raise InputError(f"this store holds {len(self.plan.points)} points; choose "
                                 f"one: store.view(point) or probe_features(point)")
            point = self.plan.points[0]
        rows = self.load(point)
        return rows.reshape(len(rows), -1).float().numpy()

    def tokens(self) -> torch.Tensor:
        """Token ids of every sequence [N, S] int64."""
        return self._gather("tokens").long()

    def attention_mask(self) -> torch.Tensor | None:
        """[N, S] (pad mode) or None (packed sequences have no padding)."""
        return self._gather("attention_mask") if self.plan.padded else None

    def _gather(self, key: str) -> torch.Tensor:
        parts = []
        for name in self.shards:
            with safe_open(str(self.root / name), framework="pt") as f:
                parts.append(f.get_tensor(key))
        return torch.cat(parts)

    def features(self, name: str, shard: int) -> torch.Tensor:
        """Sparse CSR feature activations [n*P, F] of one shard of dictionary ``name``."""
        spec = {d.name: d for d in self.plan.dictionaries}.get(name)
        if spec is None:
            raise InputError(f"no dictionary {name!r} in this harvest; stored: "
                             f"{[d.name for d in self.plan.dictionaries]}")
        with safe_open(str(self.root / self.shards[shard]), framework="pt") as f:
            indptr, indices, values = (f.get_tensor(f"feat.{name}.{part}")
                                       for part in ("indptr", "indices", "values"))
        with warnings.catch_warnings():  # "sparse CSR support is in beta": nothing to act on
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(indptr, indices.long(), values,
                                           size=(len(indptr) - 1, spec.num_features),
                                           check_invariants=True)

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.root)!r}, points={self.points}, "
                f"sequences={self.num_sequences}, shards={len(self.shards)}, "
                f"status={self.manifest.get('status')})")


class StoreView:
    """One point of a store: what ``train_probe`` and loaders take."""

    def __init__(self, store: ActivationStore, point: str) -> None:
        self.store, self.point = store, point

    def probe_features(self) -> np.ndarray:
        return self.store.probe_features(self.point)

    def iter_batches(self, batch_size: int, **options) -> Iterator[torch.Tensor]:
        return self.store.iter_batches(self.point, batch_size, **options)

    def __repr__(self) -> str:
        return f"StoreView({self.store.root.name!r}, {self.point!r})"
