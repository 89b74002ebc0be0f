"""One shard: run the model over its sequences, keep the chosen positions of every point and
the dictionaries' features (sparse), and write it atomically.

:func:`produce_shard` is THE worker function: the local engine and every Ray actor call it
on identical :class:`ShardInput`s with the same batch chunks, so their bytes are equal.
"""

from __future__ import annotations

import hashlib
import os
import signal
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from .errors import ShardCorruptError
from .plan import HarvestPlan
from .sequences import ShardInput
from .stats import FeatureStats

# One key only: safetensors keeps metadata in a hash map whose order changes per process,
# so two keys would make equal shards differ in their header bytes.
SHARD_METADATA = {"format": "torch-mi-harvest/1"}
FAULT_SHARD_ENV = "TORCH_MI_HARVEST_FAULT_SHARD"  # tests: die when this shard's temp file
FAULT_MARKER_ENV = "TORCH_MI_HARVEST_FAULT_MARKER"  # is written, once (marker file absent)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.safetensors"


@dataclass(frozen=True)
class ShardRecord:
    """A written shard as the manifest lists it."""

    index: int
    file: str
    first_seq: int
    num_seqs: int
    num_tokens: int
    bytes: int
    sha256: str

    def __post_init__(self) -> None:
        """A manifest or journal is read back from disk: a record naming any other file
        (``../x``, an absolute path) or with non-integer counts is refused, never opened."""
        counts = (self.index, self.first_seq, self.num_seqs, self.num_tokens, self.bytes)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in counts) \
                or not isinstance(self.sha256, str) or self.file != shard_name(self.index):
            raise ShardCorruptError(f"a shard record is malformed ({str(asdict(self))[:160]}); "
                                    f"the manifest was edited or damaged: rerun the harvest "
                                    f"into a new folder")

    def to_json(self) -> dict:
        return asdict(self)


def act_key(point: str) -> str:
    return f"act.{point}"


def _forward_chunk(model, plan: HarvestPlan, spec: HookSpec, ids: torch.Tensor,
                   mask: torch.Tensor | None):
    device = model.device
    extra = ({"stop_at_layer": plan.stop_at_layer} if plan.stop_at_layer is not None
             else {"last_logits_only": True})
    return model.forward(ids.to(device), spec,
                         attention_mask=None if mask is None else mask.to(device), **extra)


def _select(acts: torch.Tensor, plan: HarvestPlan) -> torch.Tensor:
    """[b, S, *shape] -> [b, S, *shape] / [b, *shape] (last) / [b, P, *shape] (slice)."""
    keep = plan.positions.indices(acts.shape[1])
    if keep is None:
        return acts[:, -1]
    return acts if len(keep) == acts.shape[1] else acts[:, keep]


def _encode(dictionary, spec, acts: torch.Tensor) -> torch.Tensor:
    """Feature activations [..., F] (fp32) of captures [..., D]."""
    if spec.kind == "sae":
        return dictionary.encode(acts)
    return dictionary.encode_dense(acts, spec.layer)


class _Features:
    """Sparse rows and running statistics of one dictionary over a shard."""

    def __init__(self, spec, k: int) -> None:
        self.spec, self.k = spec, k
        self.counts: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.stats = FeatureStats.empty(spec.num_features, k)

    def add(self, feats: torch.Tensor, valid: torch.Tensor, seq: torch.Tensor,
            pos: torch.Tensor, dtype: torch.dtype) -> None:
        """feats [R, F] fp32 of R selected positions (row-major), valid/seq/pos [R]."""
        feats = feats * valid.unsqueeze(1).to(feats.dtype)  # padding rows hold no feature
        rows, cols = feats.nonzero(as_tuple=True)
        self.counts.append(torch.bincount(rows, minlength=feats.shape[0]))
        self.indices.append(cols.to(torch.int32))
        self.values.append(feats[rows, cols].to(dtype))
        chunk = FeatureStats.from_chunk(feats[valid], seq[valid], pos[valid], self.k)
        self.stats = self.stats.merge(chunk)

    def tensors(self) -> dict[str, torch.Tensor]:
        counts = torch.cat(self.counts)
        indptr = torch.zeros(len(counts) + 1, dtype=torch.long)
        indptr[1:] = counts.cumsum(0)
        name = self.spec.name
        return {f"feat.{name}.indptr": indptr, f"feat.{name}.indices": torch.cat(self.indices),
                f"feat.{name}.values": torch.cat(self.values),
                **self.stats.tensors(f"stats.{name}")}


def compute_shard(model, plan: HarvestPlan, item: ShardInput, dictionaries=()
                  ) -> dict[str, torch.Tensor]:
    """Every tensor of one shard (see the design: tokens, masks, act.*, feat.*, stats.*)."""
    points = [HookPoint.parse(p) for p in plan.points]
    dict_points = [HookPoint.parse(d.point) for d in plan.dictionaries]
    spec = HookSpec().capture(*points, *dict_points)
    n, seq_len = item.ids.shape
    keep = plan.positions.indices(seq_len)
    pos_idx = torch.tensor([seq_len - 1] if keep is None else keep, dtype=torch.long)  # [P]
    acts: dict[str, list[torch.Tensor]] = {p: [] for p in plan.points}
    feats = [_Features(d, plan.top_k) for d in plan.dictionaries]
    for start in range(0, n, plan.batch_size):
        ids = item.ids[start:start + plan.batch_size]  # [b, S]
        mask = None if item.mask is None else item.mask[start:start + plan.batch_size]
        with torch.no_grad():
            cache = _forward_chunk(model, plan, spec, ids, mask)
            for name, point in zip(plan.points, points, strict=True):
                acts[name].append(_select(cache[point], plan).to("cpu", plan.torch_dtype))
            if feats:
                b = ids.shape[0]
                seq = (item.first_seq + start + torch.arange(b)).repeat_interleave(len(pos_idx))
                pos = pos_idx.repeat(b)  # [b*P]
                valid = (torch.ones(b, len(pos_idx), dtype=torch.bool) if mask is None
                         else mask[:, pos_idx].bool()).reshape(-1)
                for f, d, point in zip(feats, plan.dictionaries, dict_points, strict=True):
                    selected = cache[point][:, pos_idx]  # [b, P, ...]
                    encoded = _encode(dictionaries[plan.dictionaries.index(d)], d, selected)
                    f.add(encoded.reshape(b * len(pos_idx), -1).float().cpu(), valid, seq, pos,
                          plan.torch_dtype)
        del cache
    out = {"tokens": item.ids.to(torch.int32),
           "seq_index": item.first_seq + torch.arange(n, dtype=torch.long)}
    if item.mask is not None:
        out["attention_mask"] = item.mask.to(torch.uint8)
    for name in plan.points:
        out[act_key(name)] = torch.cat(acts[name]).contiguous()
    for f in feats:
        out.update(f.tensors())
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fault(index: int) -> None:
    """Fault injection for tests: SIGKILL this process once, at a chosen shard."""
    target, marker = os.environ.get(FAULT_SHARD_ENV), os.environ.get(FAULT_MARKER_ENV)
    if target is None or marker is None or int(target) != index:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def write_shard(out_dir: Path, item: ShardInput, tensors: dict[str, torch.Tensor]) -> ShardRecord:
    """Write to a temporary name in ``out_dir``, fsync, rename atomically; hash the bytes."""
    final = out_dir / shard_name(item.index)
    tmp = out_dir / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        save_file(tensors, str(tmp), metadata=SHARD_METADATA)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        _fault(item.index)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    n, seq_len = item.ids.shape
    return ShardRecord(item.index, final.name, item.first_seq, n, n * seq_len,
                       final.stat().st_size, sha256_file(final))


def produce_shard(model, plan: HarvestPlan, item: ShardInput, out_dir: str | os.PathLike,
                  dictionaries=()) -> ShardRecord:
    """Compute and write one shard (the function every engine's worker calls)."""
    return write_shard(Path(out_dir), item, compute_shard(model, plan, item, dictionaries))
