"""Reading transcoder weight files piece by piece: headers, whole tensors, rows, slices.

Why not ``safetensors.safe_open``: it memory-maps the file, so while a tensor is copied out
the mapped pages count in RSS too (twice the tensor). Here a tensor is read with plain
``readinto`` straight into its destination (through a small bounce buffer when the dtype
changes), so loading one layer's encoder costs that encoder and nothing more, and single
decoder rows are read with one seek each.

NPZ archives are read with ``numpy.load(allow_pickle=False)`` after their headers were checked
for object arrays: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from torch_mi.errors import WeightError

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "F64": torch.float64}
_MAX_HEADER = 100 << 20
_CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class TensorInfo:
    """Name, dtype, shape and absolute byte span of one stored tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int = 0
    end: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class SafetensorsFile:
    """Header of a ``.safetensors`` file plus readers that never map the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightError(f"weight file {self.path} does not exist; download the complete "
                              f"transcoder (every layer file)")
        self.tensors = _read_st_header(self.path)

    def info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise WeightError(f"{self.path.name} has no tensor {name!r} (it holds "
                              f"{sorted(self.tensors)}); is this the right layer file?")
        return self.tensors[name]

    def read(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The whole tensor in ``dtype`` on CPU, read in chunks (peak = the result)."""
        info = self.info(name)
        out = torch.empty(info.shape, dtype=dtype)
        with open(self.path, "rb") as handle:
            _read_span(handle, info, 0, info.numel, out.view(-1))
        return out

    def read_rows(self, name: str, rows: Sequence[int], dtype: torch.dtype = torch.float32,
                  inner: int | None = None) -> torch.Tensor:
        """Rows ``rows`` of dim 0 (``[n, *shape[1:]]``), or with ``inner`` the entries
        ``[row, inner]`` of a 3-D tensor (``[n, shape[2]]``): one seek per row."""
        info = self.info(name)
        tail = info.shape[1:] if inner is None else info.shape[2:]
        width = math.prod(tail)
        out = torch.empty((len(rows), *tail), dtype=dtype)
        flat = out.view(len(rows), width)
        with open(self.path, "rb") as handle:
            for i, row in enumerate(rows):
                first = row * math.prod(info.shape[1:]) + (0 if inner is None else inner * width)
                _read_span(handle, info, first, width, flat[i])
        return out

    def read_inner(self, name: str, inner: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``t[:, inner, :]`` of a 3-D tensor ``[F, K, D]`` -> ``[F, D]``, streamed in chunks."""
        info = self.info(name)
        rows, k, d = info.shape
        out = torch.empty((rows, d), dtype=dtype)
        step = max(1, _CHUNK_BYTES // max(1, k * d * info.dtype.itemsize))
        buf = torch.empty(step * k * d, dtype=info.dtype)
        with open(self.path, "rb") as handle:
            for r0 in range(0, rows, step):
                n = min(step, rows - r0)
                part = buf[: n * k * d]
                _read_span(handle, info, r0 * k * d, n * k * d, part)
                out[r0:r0 + n].copy_(part.view(n, k, d)[:, inner, :])
        return out


def _read_st_header(path: Path) -> dict[str, TensorInfo]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than the 8-byte header length")
            (size,) = struct.unpack("<Q", raw)
            if size > _MAX_HEADER:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as exc:
        raise WeightError(f"{path} is not a readable safetensors file ({exc}); re-download "
                          f"it") from exc
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise WeightError(f"{path.name}: tensor {name!r} has dtype {entry.get('dtype')!r}; "
                              f"transcoder weights must be F32, F16, BF16 or F64")
        begin, end = entry["data_offsets"]
        tensors[name] = TensorInfo(name, dtype, tuple(entry["shape"]), 8 + size + begin,
                                   8 + size + end)
    return tensors


def _read_span(handle, info: TensorInfo, first: int, count: int, out: torch.Tensor) -> None:
    """Read elements ``first .. first+count`` of a stored tensor into the 1-D ``out``."""
    size = info.dtype.itemsize
    handle.seek(info.start + first * size)
    if out.dtype == info.dtype and out.is_contiguous():
        _fill(handle, out.view(torch.uint8), count * size, info)
        return
    step = max(1, _CHUNK_BYTES // size)
    buf = torch.empty(min(step, count), dtype=info.dtype)
    for i in range(0, count, step):
        n = min(step, count - i)
        _fill(handle, buf[:n].view(torch.uint8), n * size, info)
        out[i:i + n].copy_(buf[:n])


def _fill(handle, target: torch.Tensor, nbytes: int, info: TensorInfo) -> None:
    got = handle.readinto(memoryview(target.numpy()).cast("B"))
    if got != nbytes:
        raise WeightError(f"{info.name}: file ends early ({got} of {nbytes} bytes read); "
                          f"the file is truncated, re-download it")


class NpzFile:
    """A Gemma Scope ``params.npz``: headers checked for objects, arrays read without pickle."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightError(f"weight file {self.path} does not exist; download the complete "
                              f"transcoder (every layer file)")
        self.tensors = _read_npz_headers(self.path)

    def info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise WeightError(f"{self.path.name} has no array {name!r} (it holds "
                              f"{sorted(self.tensors)}); is this a Gemma Scope transcoder?")
        return self.tensors[name]

    def read(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        self.info(name)
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                array = archive[name]
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise WeightError(f"{self.path}: cannot read {name!r} without unpickling "
                              f"({exc}); torch-mi refuses pickled data") from exc
        return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)

    def read_rows(self, name: str, rows: Sequence[int], dtype: torch.dtype = torch.float32,
                  inner: int | None = None) -> torch.Tensor:
        full = self.read(name, dtype)
        picked = full[list(rows)]
        return (picked if inner is None else picked[:, inner]).clone()


def _read_npz_headers(path: Path) -> dict[str, TensorInfo]:
    tensors: dict[str, TensorInfo] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _fortran, dtype = read(handle)
                name = member[: -len(".npy")]
                if dtype.hasobject:
                    raise WeightError(f"{path}: array {name!r} holds Python objects (pickled "
                                      f"data); torch-mi never unpickles, so this NPZ is refused")
                tensors[name] = TensorInfo(name, _np_to_torch(dtype, path, name), tuple(shape))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightError(f"{path} is not a readable NPZ archive ({exc}); re-download it") from exc
    return tensors


def _np_to_torch(dtype: np.dtype, path: Path, name: str) -> torch.dtype:
    table = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
             np.dtype(np.float64): torch.float64}
    if dtype not in table:
        raise WeightError(f"{path}: array {name!r} has dtype {dtype}; transcoder weights "
                          f"must be float16/32/64")
    return table[dtype]


def open_weights(path: str | Path) -> SafetensorsFile | NpzFile:
    """The reader for a weight file, by suffix."""
    if str(path).lower().endswith(".npz"):
        return NpzFile(path)
    return SafetensorsFile(path)


__all__ = ["NpzFile", "SafetensorsFile", "TensorInfo", "open_weights"]
