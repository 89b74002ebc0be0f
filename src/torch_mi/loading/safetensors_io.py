"""Memory-mapped safetensors reading, single file or sharded.

Each tensor is viewed straight out of a private memory map and copied into its destination
parameter (converting dtype on the way); the pages just read are then released, so peak
RAM stays near the size of the weights in the target dtype. Headers are checked strictly
(safetensors_header); a shard index may only name files inside the model folder.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch

from ..errors import WeightError
from .files import open_regular, read_json
from .safetensors_header import SAFETENSORS_DTYPES, TensorEntry, read_header

__all__ = ["INDEX_NAME", "SAFETENSORS_DTYPES", "SINGLE_NAME", "SafetensorsSource", "TensorEntry",
           "checkpoint_files", "read_header", "tensor_names_from_index",
           "tensor_names_from_safetensors"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_PAGE = mmap.PAGESIZE
_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def tensor_names_from_safetensors(path: str | os.PathLike) -> list[str]:
    """Tensor names of one safetensors file (header only)."""
    return sorted(read_header(Path(path)))


def tensor_names_from_index(path: str | os.PathLike) -> list[str]:
    """Tensor names listed by a sharded checkpoint's index JSON."""
    return sorted(_read_index(Path(path)))


def _read_index(path: Path) -> dict[str, str]:
    """The index's ``weight_map`` (tensor name -> shard file name), type-checked."""
    data = read_json(path, "shard index", WeightError)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise WeightError(f"{path}: 'weight_map' must map tensor names to shard files (got "
                          f"{type(weight_map).__name__}); the index is corrupt")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or "\0" in shard:
            raise WeightError(f"{path}: tensor '{name}' maps to {shard!r}; a shard entry must be "
                              f"the file name of a shard in the model folder")
    return weight_map


def _allowed_roots(directory: Path) -> list[Path]:
    """Where shard files may live: the folder, and for a Hugging Face cache snapshot
    (``.../snapshots/<rev>/``, whose files are symlinks into ``../../blobs``) that blob store."""
    root = directory.resolve()
    roots = [root]
    if root.parent.name == "snapshots":
        roots.append(root.parent.parent / "blobs")
    return roots


def confined_shard(directory: Path, entry: str, index: Path) -> Path:
    """``directory / entry``, refused when the entry (or a symlink on its way) leaves the
    model folder: an index from the internet must not make us read arbitrary files."""
    parts = PurePosixPath(entry).parts
    if (PurePosixPath(entry).is_absolute() or PureWindowsPath(entry).is_absolute()
            or PureWindowsPath(entry).drive or ".." in parts or "\\" in entry):
        raise WeightError(f"{index} names shard {entry!r}, a path outside the model folder "
                          f"{directory}; shard entries must be plain file names inside it")
    path = directory / entry
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in _allowed_roots(directory)):
        raise WeightError(f"{index} names shard {entry!r}, which resolves (through a symlink) "
                          f"to {resolved}, outside the model folder {directory}; copy the shard "
                          f"into the folder instead of linking it")
    return path


def checkpoint_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (sharded or single)."""
    index = directory / INDEX_NAME
    if os.path.lexists(index):
        shards = sorted(set(_read_index(index).values()))
        paths = [confined_shard(directory, s, index) for s in shards]
        missing = [s for s, p in zip(shards, paths, strict=True) if not p.exists()]
        if missing:
            raise WeightError(
                f"{index} lists shard(s) {missing} that are not in {directory}; "
                f"download the complete checkpoint (all shards) again"
            )
        return paths
    single = directory / SINGLE_NAME
    if os.path.lexists(single):
        return [single]
    found = sorted(p.name for p in directory.glob("*.safetensors"))
    if len(found) == 1:
        return [directory / found[0]]
    raise WeightError(
        f"no weights in {directory}: expected {SINGLE_NAME} or {INDEX_NAME}"
        + (f" (found {found})" if found else "")
        + ". torch-mi reads safetensors only (never pickles); convert .bin checkpoints first"
    )


def _check_index_agrees(index: Path, listed: dict[str, str], entries: dict[str, TensorEntry]
                        ) -> None:
    """Every listed tensor is in the shard the index names, and every tensor is listed."""
    extra = sorted(set(listed) - set(entries))
    if extra:
        raise WeightError(f"{index} lists tensors that no shard contains: {extra[:10]}"
                          f"{' ...' if len(extra) > 10 else ''}")
    for name, entry in entries.items():
        shard = listed.get(name)
        if shard is None:
            raise WeightError(f"shard {entry.file.name} holds tensor '{name}', which {index.name} "
                              f"does not list; the index and the shards do not belong together")
        if entry.file.name != Path(shard).name:
            raise WeightError(f"{index.name} puts tensor '{name}' in {shard}, but it is in "
                              f"{entry.file.name}; the index and the shards do not belong together")


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
        if os.path.lexists(index):
            _check_index_agrees(index, _read_index(index), source.entries)
        return source

    def names(self) -> Iterator[str]:
        return iter(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def numel(self, name: str) -> int:
        return self.entries[name].numel

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            fd = open_regular(path, "safetensors file", WeightError)
            try:
                self._maps[path] = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
            except (OSError, ValueError) as exc:
                raise WeightError(f"{path}: cannot memory-map the file ({exc})") from exc
            finally:
                os.close(fd)
        return self._maps[path]

    def read(self, name: str) -> torch.Tensor:
        """A zero-copy view of tensor ``name`` (valid until ``close``)."""
        entry = self.entries[name]
        if entry.numel == 0:
            return torch.empty(entry.shape, dtype=entry.dtype)
        mapping = self._map(entry.file)
        if len(mapping) < entry.end:
            raise WeightError(f"{entry.file}: tensor '{name}' ends at byte {entry.end} but the "
                              f"file now has {len(mapping)} bytes; it changed while loading")
        flat = torch.frombuffer(mapping, dtype=entry.dtype, count=entry.numel, offset=entry.start)
        return flat.view(entry.shape)

    def copy_into(self, name: str, dest: torch.Tensor) -> None:
        """Copy tensor ``name`` into ``dest`` (dtype/device converted), then free its pages.
        Integer and bool tensors cannot hold float parameters: they are refused, not cast."""
        entry = self.entries[name]
        if dest.is_floating_point() and not entry.dtype.is_floating_point:
            raise WeightError(
                f"tensor '{name}' is stored as {_DTYPE_NAMES[entry.dtype]} in {entry.file.name}, "
                f"but its parameter holds floating-point values; casting would load wrong "
                f"weights. torch-mi loads float checkpoints (F32/F16/BF16/F8) only; use an "
                f"unquantised checkpoint")
        dest.copy_(self.read(name))
        self._release(entry)

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
