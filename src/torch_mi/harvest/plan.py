"""HarvestPlan: everything a worker needs to produce a shard, as plain JSON-able data.

The plan travels to Ray workers and is compared with an existing manifest on resume, so it
holds no tensors, no model and nothing that depends on the engine or the clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..errors import InputError

STORE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "fp16": "float16",
                 "f16": "float16", "half": "float16"}


@dataclass(frozen=True)
class Positions:
    """Which sequence positions are stored: every one, the last one, or a slice."""

    mode: str = "all"  # "all" | "last" | "slice"
    start: int | None = None
    stop: int | None = None
    step: int | None = None

    @classmethod
    def parse(cls, value: object) -> Positions:
        """"all", "last", a ``slice``, or "start:stop[:step]" text (the CLI form)."""
        if isinstance(value, Positions):
            return value
        if value in ("all", "last"):
            return cls(str(value))
        if isinstance(value, str) and ":" in value:
            try:
                parts = [int(p) if p.strip() else None for p in value.split(":")]
            except ValueError:
                parts = []
            if len(parts) in (2, 3):
                value = slice(*parts)
        if isinstance(value, slice):
            if value.step is not None and value.step <= 0:
                raise InputError(f"positions slice step must be positive, got {value.step}")
            return cls("slice", value.start, value.stop, value.step)
        raise InputError(f"positions must be 'all', 'last', a slice or 'start:stop[:step]', "
                         f"got {value!r}")

    def indices(self, seq_len: int) -> list[int] | None:
        """Positions kept of a ``seq_len`` row; None for "last" (no sequence axis)."""
        if self.mode == "last":
            return None
        if self.mode == "all":
            return list(range(seq_len))
        kept = list(range(seq_len))[slice(self.start, self.stop, self.step)]
        if not kept:
            raise InputError(f"positions slice {self.start}:{self.stop}:{self.step} keeps no "
                             f"position of a {seq_len}-token sequence")
        return kept

    def to_json(self) -> dict:
        if self.mode != "slice":
            return {"mode": self.mode}
        return {"mode": "slice", "start": self.start, "stop": self.stop, "step": self.step}


def store_dtype(value: object) -> str:
    """Canonical name of a storage dtype (float32, bfloat16, float16)."""
    if isinstance(value, torch.dtype):
        value = str(value).removeprefix("torch.")
    if isinstance(value, str):
        value = DTYPE_ALIASES.get(value, value.removeprefix("torch."))
        if value in STORE_DTYPES:
            return value
    raise InputError(f"dtype must be float32, bfloat16 or float16, got {value!r}")


@dataclass(frozen=True)
class DictionarySpec:
    """A dictionary whose features are harvested: how to reload it and what it reads."""

    name: str  # "sae.<hook>" or "clt.<layer>"
    kind: str  # "sae" | "clt"
    source: str | None  # the folder / file it was loaded from (None: not re-creatable)
    point: str  # the hook point it encodes
    layer: int | None  # transcoder layer
    num_features: int


@dataclass(frozen=True)
class HarvestPlan:
    """What to capture, how sequences are built and cut into shards."""

    points: tuple[str, ...]
    point_shapes: tuple[tuple[int, ...], ...]  # per point: trailing shape after [B, S]
    positions: Positions
    dtype: str
    seq_len: int
    batch_size: int
    seqs_per_shard: int
    packing: dict
    dictionaries: tuple[DictionarySpec, ...] = ()
    top_k: int = 10
    stop_at_layer: int | None = None  # run only the blocks the captures need
    model_load: dict = field(default_factory=dict)  # how a worker re-creates the model

    @property
    def padded(self) -> bool:
        return self.packing.get("mode") == "pad"

    @property
    def torch_dtype(self) -> torch.dtype:
        return STORE_DTYPES[self.dtype]

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["positions"] = self.positions.to_json()
        data["points"] = list(self.points)
        data["point_shapes"] = [list(s) for s in self.point_shapes]
        return data

    @classmethod
    def from_json(cls, data: dict) -> HarvestPlan:
        data = dict(data)
        data["positions"] = Positions(**data["positions"])
        data["points"] = tuple(data["points"])
        data["point_shapes"] = tuple(tuple(s) for s in data["point_shapes"])
        data["dictionaries"] = tuple(DictionarySpec(**d) for d in data["dictionaries"])
        return cls(**data)
