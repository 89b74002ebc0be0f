"""The local engine: one process, shards in order; the write of shard k (safetensors, fsync,
rename, checksum) overlaps the forward of shard k+1 in one background thread."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .plan import HarvestPlan
from .sequences import ShardInput
from .shard import ShardRecord, compute_shard, write_shard


def run_local(model, plan: HarvestPlan, items: Iterable[ShardInput], out_dir: Path,
              dictionaries, on_record: Callable[[ShardRecord], None]) -> None:
    """Produce every shard of ``items``; ``on_record`` is called in shard order."""
    pending: Future | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="harvest-write") as writer:
        try:
            for item in items:
                tensors = compute_shard(model, plan, item, dictionaries)
                if pending is not None:
                    on_record(pending.result())
                pending = writer.submit(write_shard, out_dir, item, tensors)
            if pending is not None:
                on_record(pending.result())
                pending = None
        finally:
            if pending is not None:  # an error upstream: keep the shard already computed
                with contextlib.suppress(Exception):  # the first error wins; a rerun redoes it
                    on_record(pending.result())
