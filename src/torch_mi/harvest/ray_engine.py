"""The Ray engine: a Ray Data pipeline of shard inputs through a pool of actors, each holding
one model, each writing its shards straight into the (shared) output folder.

Identity with the local engine: the driver cuts sequences into the same ShardInputs, every
actor calls the same :func:`~torch_mi.harvest.shard.produce_shard` with the same batch
chunks and a fixed thread count, so the shard bytes are the local engine's. Records come
back out of order; the manifest lists them sorted. A dead actor is restarted and its shard
retried by Ray Data (actor pools default to ``max_restarts=-1, max_task_retries=-1``); a
retried shard overwrites nothing but its own temporary file.

Connects to ``RAY_ADDRESS`` (or ``ray_options["address"]``) when set, else starts a local
Ray; an already initialised Ray is used as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from .errors import EngineUnavailableError, HarvestError, ManifestMismatchError
from .manifest import weight_hash
from .plan import HarvestPlan
from .sequences import ShardInput
from .shard import ShardRecord, produce_shard

OPTIONS = ("address", "num_workers", "num_cpus", "num_gpus", "device", "runtime_env")


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EngineUnavailableError("engine='ray' needs Ray Data, an optional extra: "
                                     "pip install 'torch-mi[ray]' (or pip install 'ray[data]'); "
                                     "or use engine='local'") from exc
    return ray


def _load_dictionary(spec, shipped):
    """The worker's copy of a dictionary: reloaded from its folder when known."""
    if spec.source is None:
        return shipped
    from ..dictionaries import CrossLayerTranscoder, SparseAutoencoder

    cls = SparseAutoencoder if spec.kind == "sae" else CrossLayerTranscoder
    return cls.from_local(spec.source)


class ShardWorker:
    """One Ray actor: loads the model once, then produces whole shards."""

    def __init__(self, plan_json: dict, out_dir: str, dictionaries: list, threads: int,
                 device: str, expected_hash: str) -> None:
        from ..model import MIModel

        torch.set_num_threads(max(1, threads))
        self.plan = HarvestPlan.from_json(plan_json)
        load = self.plan.model_load
        self.model = MIModel.from_pretrained(load["source"], dtype=load["dtype"], device=device)
        found = weight_hash(self.model)
        if found != expected_hash:  # edited weights on the driver, or another file now
            raise ManifestMismatchError(
                f"the worker's model loaded from {load['source']!r} has weight hash "
                f"{found[:12]}, the driver's {expected_hash[:12]}: the driver's weights were "
                f"changed after loading, or the file changed; use engine='local'")
        self.out_dir = Path(out_dir)
        self.dictionaries = [_load_dictionary(s, d)
                             for s, d in zip(self.plan.dictionaries, dictionaries, strict=True)]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for i in range(len(batch["index"])):
            ids = torch.from_numpy(np.array(batch["ids"][i], dtype=np.int64))
            mask = (torch.from_numpy(np.array(batch["mask"][i], dtype=np.int64))
                    if self.plan.padded else None)
            item = ShardInput(int(batch["index"][i]), int(batch["first_seq"][i]), ids, mask)
            records.append(produce_shard(self.model, self.plan, item, self.out_dir,
                                         self.dictionaries).to_json())
        return {key: np.array([r[key] for r in records]) for key in records[0]}


def _connect(ray, options: dict) -> None:
    if ray.is_initialized():
        return
    address = options.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(include_dashboard=False)


def _rows(plan: HarvestPlan, items: Iterable[ShardInput]) -> list[dict]:
    rows = []
    for item in items:
        ids = item.ids.numpy().astype(np.int32)
        mask = (item.mask.numpy().astype(np.int8) if item.mask is not None
                else np.zeros((1, 1), dtype=np.int8))
        rows.append({"index": item.index, "first_seq": item.first_seq, "ids": ids, "mask": mask})
    return rows


def run_ray(plan: HarvestPlan, items: Iterable[ShardInput], out_dir: Path, dictionaries,
            on_record: Callable[[ShardRecord], None], options: dict, expected_hash: str
            ) -> None:
    """Produce every shard of ``items`` on a Ray actor pool."""
    ray = _ray()
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise EngineUnavailableError(f"unknown ray_options {unknown}; use {list(OPTIONS)}")
    if plan.model_load.get("source") is None:
        raise EngineUnavailableError("engine='ray' re-creates the model in each worker from "
                                     "its source, but this model has none; load it with "
                                     "MIModel.from_pretrained(...)")
    _connect(ray, options)
    rows = _rows(plan, items)  # token ids only: 4 bytes per token on the driver
    if not rows:
        return
    workers = int(options.get("num_workers", 2))
    cpus = float(options.get("num_cpus", 1))
    gpus = float(options.get("num_gpus", 0))
    device = options.get("device") or ("cuda" if gpus > 0 else "cpu")
    data = ray.data.from_items(rows, override_num_blocks=len(rows))
    records = data.map_batches(
        ShardWorker, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus,
        num_gpus=gpus, runtime_env=options.get("runtime_env"),
        fn_constructor_kwargs={"plan_json": plan.to_json(), "out_dir": str(out_dir),
                               "dictionaries": [None if s.source else d for s, d in
                                                zip(plan.dictionaries, dictionaries, strict=True)],
                               "threads": max(1, int(cpus)), "device": device,
                               "expected_hash": expected_hash})
    try:
        for row in records.iter_rows():
            on_record(ShardRecord(**{k: (v.item() if hasattr(v, "item") else v)
                                     for k, v in row.items()}))
    except ray.exceptions.RayError as exc:  # a worker's typed error arrives wrapped
        text = str(exc)
        found = re.search(rf"{ManifestMismatchError.__name__}: (.+)", text)
        if found:
            raise ManifestMismatchError(found.group(1).strip()) from exc
        raise HarvestError(f"the Ray pipeline failed: {text.strip().splitlines()[0][:300]} "
                           f"(shards already written are kept; rerun to resume)") from exc
