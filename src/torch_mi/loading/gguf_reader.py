"""A lean GGUF reader: header, metadata and tensor directory parsed with ``struct``/numpy,
tensor data memory-mapped.

``gguf.GGUFReader`` builds a numpy object for every element of every metadata array (about
3.5 s for SmolLM2's 49k-token vocabulary); here numeric arrays are single ``frombuffer``
views and string arrays one tight loop, so opening a file costs milliseconds. Any
structural problem (bad magic, truncation, an offset past the end) is a WeightError.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightError
from .files import open_regular

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 8  # arrays of arrays: real files nest at most twice
_PAGE = mmap.PAGESIZE

# ggml type id -> (name, elements per block, bytes per block): the ggml on-disk format.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}

# GGUF metadata value types: id -> struct format (scalars) or a marker.
_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
                            7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY: dict[int, str] = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4",
                          6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


def ggml_type_name(type_id: int) -> str:
    """Human name of a ggml type id ("Q4_K"), or "type <id>" if unknown."""
    entry = GGML_TYPES.get(type_id)
    return entry[0] if entry else f"type {type_id}"


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One entry of the tensor directory. ``dims`` is GGUF order (ne0, the fastest, first)."""

    name: str
    type_id: int
    dims: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """The torch (row-major) shape: GGUF dims reversed."""
        return tuple(reversed(self.dims))

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.type_id)

    @property
    def num_elements(self) -> int:
        count = 1
        for dim in self.dims:
            count *= dim
        return count


class _Cursor:
    """Sequential little-endian reads over a buffer; running off the end is a WeightError."""

    def __init__(self, buffer: mmap.mmap, where: str) -> None:
        self.buf, self.pos, self.where, self.size = buffer, 0, where, len(buffer)

    def need(self, count: int) -> None:
        if count < 0 or self.pos + count > self.size:
            raise WeightError(f"{self.where}: the file is truncated or corrupt (needs {count} "
                              f"bytes at offset {self.pos}, file has {self.size}); "
                              f"download or assemble it again")

    def need_items(self, count: int, min_size: int) -> None:
        """Refuse a count that cannot fit in the rest of the file (items of >= min_size bytes)
        before looping over it."""
        if count * min_size > self.size - self.pos:
            raise WeightError(f"{self.where}: an array claims {count} items at offset {self.pos} "
                              f"but only {self.size - self.pos} bytes remain; the file is "
                              f"truncated or corrupt")

    def scalar(self, fmt: str) -> Any:
        width = struct.calcsize(fmt)
        self.need(width)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += width
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        self.need(length)
        raw = self.buf[self.pos:self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def numeric_array(self, value_type: int, count: int) -> np.ndarray:
        dtype = np.dtype(_NUMPY[value_type])
        self.need(count * dtype.itemsize)
        array = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += count * dtype.itemsize
        return array.astype(bool) if value_type == 7 else array

    def string_array(self, count: int) -> list[str]:
        """``count`` length-prefixed strings, in one tight loop (vocabularies are 100k+)."""
        self.need_items(count, 8)
        buf, pos, size, out = self.buf, self.pos, self.size, []
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8)
            (length,) = unpack(buf, pos)
            end = pos + 8 + length
            if end > size:
                self.pos = pos + 8
                self.need(length)
            out.append(buf[pos + 8:end].decode("utf-8", errors="replace"))
            pos = end
        self.pos = pos
        return out


def _read_value(cur: _Cursor, value_type: int, key: str, depth: int = 0) -> Any:
    if value_type in _SCALARS:
        return cur.scalar(_SCALARS[value_type])
    if value_type == _STRING:
        return cur.string()
    if value_type == _ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise WeightError(f"{cur.where}: metadata key {key!r} nests arrays more than "
                              f"{MAX_ARRAY_DEPTH} deep; no model file does, so it is refused")
        item_type, count = cur.scalar("<I"), cur.scalar("<Q")
        if item_type in _NUMPY:
            return cur.numeric_array(item_type, count)
        if item_type == _STRING:
            return cur.string_array(count)
        if item_type == _ARRAY:
            cur.need_items(count, 12)  # each item: its own type and count
            return [_read_value(cur, _ARRAY, key, depth + 1) for _ in range(count)]
        value_type = item_type
    raise WeightError(f"{cur.where}: metadata key {key!r} has unknown value type {value_type}; "
                      f"the file is corrupt or from a newer GGUF version")


def _check_disjoint(where: str, infos: Any) -> None:
    """No two tensors may share bytes (one would be read from the other's data)."""
    previous = None
    for info in sorted(infos, key=lambda i: (i.offset, i.nbytes)):
        if info.nbytes == 0:
            continue
        if previous is not None and info.offset < previous.offset + previous.nbytes:
            raise WeightError(f"{where}: tensors {previous.name!r} and {info.name!r} overlap "
                              f"(byte {info.offset}); the file is corrupt")
        previous = info


class GGUFFile:
    """An open GGUF file: ``metadata`` (key -> value), ``tensors`` (name -> info) and
    zero-copy access to each tensor's raw bytes through a private memory map."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        where = str(self.path)
        fd = open_regular(self.path, "GGUF file", WeightError)
        try:
            size = os.fstat(fd).st_size
            if size < 24:
                raise WeightError(f"{where}: not a GGUF file (only {size} bytes)")
            self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            raise WeightError(f"{where}: cannot open the GGUF file ({exc})") from exc
        finally:
            os.close(fd)
        try:
            self._parse(_Cursor(self._map, where))
        except WeightError:
            self.close()
            raise

    def _parse(self, cur: _Cursor) -> None:
        if cur.buf[:4] != MAGIC:
            raise WeightError(f"{cur.where}: not a GGUF file (magic {bytes(cur.buf[:4])!r}, "
                              f"expected {MAGIC!r})")
        cur.pos = 4
        self.version = cur.scalar("<I")
        if self.version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(self.version.to_bytes(4, "little"), "big")
            kind = "big-endian GGUF files are" if swapped in SUPPORTED_VERSIONS else \
                f"GGUF version {self.version} is"
            raise WeightError(f"{cur.where}: {kind} not supported (supported: little-endian "
                              f"versions {SUPPORTED_VERSIONS})")
        n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
        if n_tensors > cur.size // 24 or n_kv > cur.size // 12:
            raise WeightError(f"{cur.where}: corrupt header ({n_tensors} tensors, {n_kv} keys "
                              f"cannot fit in {cur.size} bytes)")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            if key in self.metadata:
                raise WeightError(f"{cur.where}: metadata key {key!r} is listed twice; which "
                                  f"value is meant is ambiguous, so the file is refused")
            self.metadata[key] = _read_value(cur, cur.scalar("<I"), key)
        self.alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (not isinstance(self.alignment, int) or self.alignment <= 0
                or self.alignment & (self.alignment - 1)):
            raise WeightError(f"{cur.where}: general.alignment {self.alignment} is not a power "
                              f"of two")
        raw = [self._read_tensor_info(cur) for _ in range(n_tensors)]
        self.data_start = -(-cur.pos // self.alignment) * self.alignment
        self.tensors: dict[str, GGUFTensorInfo] = {}
        for name, type_id, dims, rel in raw:
            if name in self.tensors:
                raise WeightError(f"{cur.where}: tensor {name!r} is listed twice")
            self.tensors[name] = self._locate(cur, name, type_id, dims, rel)
        _check_disjoint(cur.where, self.tensors.values())

    @staticmethod
    def _read_tensor_info(cur: _Cursor) -> tuple[str, int, tuple[int, ...], int]:
        name = cur.string()
        n_dims = cur.scalar("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise WeightError(f"{cur.where}: tensor {name!r} has {n_dims} dimensions; the file "
                              f"is corrupt")
        dims = tuple(cur.scalar("<Q") for _ in range(n_dims))
        return name, cur.scalar("<I"), dims, cur.scalar("<Q")

    def _locate(self, cur: _Cursor, name: str, type_id: int, dims: tuple[int, ...],
                rel: int) -> GGUFTensorInfo:
        """Absolute extent of a tensor's data, checked against the type and the file size."""
        if type_id not in GGML_TYPES:
            raise WeightError(f"{cur.where}: tensor {name!r} has ggml type id {type_id}, which no "
                              f"GGUF version defines; the file is corrupt or from a newer format")
        if rel % self.alignment:
            raise WeightError(f"{cur.where}: tensor {name!r} starts at data offset {rel}, not a "
                              f"multiple of general.alignment {self.alignment}; the file is corrupt")
        type_name, block, type_size = GGML_TYPES[type_id]
        if dims[0] % block:
            raise WeightError(f"{cur.where}: tensor {name!r} ({type_name}) has a row of "
                              f"{dims[0]} elements, not a multiple of the block size {block}")
        count = 1
        for dim in dims:
            count *= dim
        offset, nbytes = self.data_start + rel, count // block * type_size
        if offset + nbytes > cur.size:
            raise WeightError(f"{cur.where}: tensor {name!r} extends past the end of the file "
                              f"(ends at byte {offset + nbytes}, file has {cur.size}); the "
                              f"file is truncated, download or assemble it again")
        return GGUFTensorInfo(name, type_id, dims, offset, nbytes)

    # ---- data access ------------------------------------------------------------------
    def raw(self, name: str) -> np.ndarray:
        """The bytes of tensor ``name`` as a uint8 view of the memory map (valid until close)."""
        info = self.tensors[name]
        return np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def release(self, name: str) -> None:
        """Drop the pages of tensor ``name`` from memory (they are re-read if needed)."""
        info = self.tensors[name]
        start = info.offset - info.offset % _PAGE
        length = info.offset + info.nbytes - start
        if length > _PAGE and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, start, length)

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):  # a view is still alive
            self._map.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
