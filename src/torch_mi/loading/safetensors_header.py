"""Strict parsing of one safetensors header, as strict as the ``safetensors`` library.

The rules are the library's (``SafeTensors::validate``): an 8-byte little-endian length
(at most 100 MB) followed by a UTF-8 JSON object; ``__metadata__`` maps strings to strings;
every other entry has a known ``dtype``, a ``shape`` of non-negative integers and
``data_offsets`` ``[begin, end]`` with ``end - begin == numel * itemsize``; sorted by offset
the entries tile the data section exactly (no gap, no overlap, nothing past the end). A file
that breaks any rule would read some tensor from another tensor's bytes or past the end, so
it is a WeightError naming the tensor and the offending value. Only the header is read.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightError
from .files import open_regular

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's limit
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, dtype, shape and absolute byte range."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook that refuses a key given twice (json keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise WeightError(f"the safetensors header lists '{key}' twice; which entry is "
                              f"meant is ambiguous, so the file is refused")
        out[key] = value
    return out


def _read_raw(path: Path) -> tuple[dict[str, Any], int, int]:
    """(header object, header length, data-section size) of the file at ``path``."""
    fd = open_regular(path, "safetensors file", WeightError)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        raw_len = handle.read(8)
        if len(raw_len) != 8:
            raise WeightError(f"{path}: not a safetensors file ({size} bytes, shorter than the "
                              f"8-byte header length)")
        (length,) = struct.unpack("<Q", raw_len)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise WeightError(f"{path}: not a safetensors file, or truncated (header length "
                              f"{length} in a file of {size} bytes; at most "
                              f"{MAX_HEADER_BYTES} allowed)")
        text = handle.read(length)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_unique_object)
    except WeightError as exc:
        raise WeightError(f"{path}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise WeightError(f"{path}: the safetensors header is not valid JSON ({exc}); the file "
                          f"is corrupt") from None
    if not isinstance(header, dict):
        raise WeightError(f"{path}: the safetensors header must be a JSON object, got "
                          f"{type(header).__name__}; the file is corrupt")
    return header, length, size - 8 - length


def _check_metadata(path: Path, metadata: object) -> None:
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightError(f"{path}: '__metadata__' must map strings to strings, got "
                          f"{str(metadata)[:80]}; the file is corrupt")


def _entry(path: Path, name: str, info: object, base: int) -> TensorEntry:
    """One checked header entry (dtype known, shape and offsets well formed and consistent)."""
    where = f"{path}: tensor '{name}'"
    if not isinstance(info, dict) or not set(info) >= _ENTRY_KEYS:
        keys = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise WeightError(f"{where} must be an object with 'dtype', 'shape' and 'data_offsets' "
                          f"(got {keys}); the file is corrupt")
    dtype = SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise WeightError(f"{where} has unsupported dtype {info['dtype']!r}; supported: "
                          f"{', '.join(SAFETENSORS_DTYPES)}")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise WeightError(f"{where} has shape {shape!r}; a shape is a list of non-negative "
                          f"integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets))
            or offsets[0] > offsets[1]):
        raise WeightError(f"{where} has data_offsets {offsets!r}; expected [begin, end] with "
                          f"0 <= begin <= end")
    entry = TensorEntry(path, dtype, tuple(shape), base + offsets[0], base + offsets[1])
    expected = entry.numel * dtype.itemsize
    if offsets[1] - offsets[0] != expected:
        raise WeightError(f"{where} ({info['dtype']} {list(shape)}) needs {expected} bytes but "
                          f"its data_offsets {offsets} span {offsets[1] - offsets[0]}; the "
                          f"header is inconsistent, so the file is refused")
    return entry


def _check_tiling(path: Path, entries: dict[str, TensorEntry], base: int, data_size: int) -> None:
    """Sorted by offset, the tensors must cover the data section exactly, without overlap."""
    cursor, previous = base, None
    for name, entry in sorted(entries.items(), key=lambda item: (item[1].start, item[1].end)):
        if entry.start < cursor:
            raise WeightError(f"{path}: tensors '{previous}' and '{name}' overlap (byte "
                              f"{entry.start - base} of the data section); the file is corrupt")
        if entry.start > cursor:
            raise WeightError(f"{path}: {entry.start - cursor} bytes before tensor '{name}' "
                              f"belong to no tensor; the file is corrupt")
        cursor, previous = entry.end, name
    if cursor > base + data_size:
        raise WeightError(f"{path}: tensor '{previous}' ends at byte {cursor - base} of the data "
                          f"section, which has {data_size}; the file is truncated, download it "
                          f"again")
    if cursor < base + data_size:
        raise WeightError(f"{path}: the tensors span {cursor - base} bytes but the data section "
                          f"has {data_size}; the file is followed by stray bytes, download it "
                          f"again")


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Every tensor of one safetensors file, checked as the safetensors library checks them."""
    path = Path(path)
    header, length, data_size = _read_raw(path)
    base = 8 + length
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            _check_metadata(path, info)
            continue
        entries[name] = _entry(path, name, info, base)
    _check_tiling(path, entries, base, data_size)
    return entries
