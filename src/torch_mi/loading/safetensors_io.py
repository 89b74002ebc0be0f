"""Memory-mapped safetensors reading, single file or sharded.

Each tensor is viewed straight out of a private memory map and copied into its destination
parameter (converting dtype on the way); the pages just read are then released, so peak
RAM stays near the size of the weights in the target dtype.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import WeightError

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse a safetensors header (8-byte length + JSON) without touching the data."""
    try:
        with open(path, "rb") as handle:
            raw_len = handle.read(8)
            if len(raw_len) != 8:
                raise WeightError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (length,) = struct.unpack("<Q", raw_len)
            if length > 100_000_000 or length > os.path.getsize(path):
                raise WeightError(f"{path}: not a safetensors file (header length {length})")
            header = json.loads(handle.read(length))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightError(f"{path}: cannot read the safetensors header ({exc})") from exc
    base = 8 + length
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise WeightError(f"{path}: tensor '{name}' has unsupported dtype {info.get('dtype')}")
        begin, end = info["data_offsets"]
        entries[name] = TensorEntry(path, dtype, tuple(info["shape"]), base + begin, base + end)
    return entries


def tensor_names_from_safetensors(path: str | os.PathLike) -> list[str]:
    """Tensor names of one safetensors file (header only)."""
    return sorted(read_header(Path(path)))


def tensor_names_from_index(path: str | os.PathLike) -> list[str]:
    """Tensor names listed by a sharded checkpoint's index JSON."""
    return sorted(_read_index(Path(path)))


def _read_index(path: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise WeightError(f"{path}: cannot read the shard index ({exc})") from exc
    if not isinstance(weight_map, dict):
        raise WeightError(f"{path}: 'weight_map' must map tensor names to shard files")
    return weight_map


def checkpoint_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (sharded or single)."""
    index = directory / INDEX_NAME
    if index.exists():
        shards = sorted(set(_read_index(index).values()))
        missing = [s for s in shards if not (directory / s).exists()]
        if missing:
            raise WeightError(
                f"{index} lists shard(s) {missing} that are not in {directory}; "
                f"download the complete checkpoint (all shards) again"
            )
        return [directory / s for s in shards]
    single = directory / SINGLE_NAME
    if single.exists():
        return [single]
    found = sorted(p.name for p in directory.glob("*.safetensors"))
    if len(found) == 1:
        return [directory / found[0]]
    raise WeightError(
        f"no weights in {directory}: expected {SINGLE_NAME} or {INDEX_NAME}"
        + (f" (found {found})" if found else "")
        + ". torch-mi reads safetensors only (never pickles); convert .bin checkpoints first"
    )


class SafetensorsSource:
    """All tensors of one checkpoint (one or many files), read lazily through mmap."""

    def __init__(self, files: list[Path]) -> None:
        self.entries: dict[str, TensorEntry] = {}
        for path in files:
            for name, entry in read_header(path).items():
                if name in self.entries:
                    raise WeightError(
                        f"tensor '{name}' appears in both {self.entries[name].file.name} and "
                        f"{path.name}; the checkpoint is inconsistent"
                    )
                self.entries[name] = entry
        self._maps: dict[Path, mmap.mmap] = {}

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> SafetensorsSource:
        directory = Path(directory)
        source = cls(checkpoint_files(directory))
        index = directory / INDEX_NAME
        if index.exists():
            listed = set(_read_index(index))
            extra = sorted(listed - set(source.entries))
            if extra:
                raise WeightError(
                    f"{index} lists tensors that no shard contains: {extra[:10]}"
                    f"{' ...' if len(extra) > 10 else ''}"
                )
        return source

    def names(self) -> Iterator[str]:
        return iter(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            with open(path, "rb") as handle:
                self._maps[path] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._maps[path]

    def read(self, name: str) -> torch.Tensor:
        """A zero-copy view of tensor ``name`` (valid until ``close``)."""
        entry = self.entries[name]
        count = 1
        for dim in entry.shape:
            count *= dim
        if count == 0:
            return torch.empty(entry.shape, dtype=entry.dtype)
        flat = torch.frombuffer(self._map(entry.file), dtype=entry.dtype, count=count,
                                offset=entry.start)
        return flat.view(entry.shape)

    def copy_into(self, name: str, dest: torch.Tensor) -> None:
        """Copy tensor ``name`` into ``dest`` (dtype/device converted), then free its pages."""
        dest.copy_(self.read(name))
        self._release(self.entries[name])

    def _release(self, entry: TensorEntry) -> None:
        start = entry.start - entry.start % _PAGE
        length = entry.end - start
        if length > _PAGE and hasattr(mmap, "MADV_DONTNEED"):
            self._map(entry.file).madvise(mmap.MADV_DONTNEED, start, length)

    def close(self) -> None:
        for mapping in self._maps.values():
            with contextlib.suppress(BufferError):  # a view is still alive; freed at exit
                mapping.close()
        self._maps.clear()

    def __enter__(self) -> SafetensorsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
