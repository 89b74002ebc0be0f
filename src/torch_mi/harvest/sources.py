"""Where documents come from: text files or folders, JSONL, Parquet, a saved HF ``datasets``
folder. Every source is read in one deterministic order (files sorted by their POSIX path
relative to the root; records in file order), so a sequence index means the same text on
every run and every machine. All files are hashed when the source is opened: an unreadable
file fails before anything is written, and the hash is the dataset's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
HF_MARKERS = ("dataset_info.json", "state.json")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceFile:
    """One input file: path relative to the root, kind, size and content hash."""

    path: str
    kind: str  # "text" | "jsonl" | "parquet" | "hf"
    bytes: int
    sha256: str


def _hash_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise DatasetError(f"cannot read dataset file {path}: {exc.strerror or exc}; check "
                           f"that it exists and is readable") from exc
    return size, digest.hexdigest()


def _kind_of(path: Path, single: bool) -> str | None:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in TEXT_SUFFIXES or single:  # a lone file of another suffix is read as text
        return "text"
    return None


class Dataset:
    """Documents (strings) of a path, in a fixed order, with a fingerprint."""

    def __init__(self, path: str | os.PathLike, *, text_field: str = "text") -> None:
        if not isinstance(text_field, str) or not text_field:
            raise DatasetError(f"text_field must be a non-empty string, got {text_field!r}")
        self.root = Path(path).expanduser()
        self.text_field = text_field
        if not self.root.exists():
            raise DatasetError(f"dataset path {self.root} does not exist; give a text file, "
                               f"a folder, a .jsonl or .parquet file, or a saved HF dataset")
        self.kind = "hf" if self.root.is_dir() and any(
            (self.root / m).is_file() for m in HF_MARKERS) else "files"
        self.files = self._list_files()
        if not self.files:
            raise DatasetError(f"dataset {self.root} holds no readable file (text: "
                               f"{', '.join(TEXT_SUFFIXES)}; {JSONL_SUFFIXES[0]}; .parquet)")

    def _list_files(self) -> tuple[SourceFile, ...]:
        if self.root.is_file():
            size, digest = _hash_file(self.root)
            return (SourceFile(self.root.name, _kind_of(self.root, True) or "text", size, digest),)
        found = []
        for path in sorted(self.root.rglob("*"), key=lambda p: p.relative_to(self.root).as_posix()):
            rel = path.relative_to(self.root).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts) or not path.is_file():
                continue
            kind = "hf" if self.kind == "hf" else _kind_of(path, False)
            if kind is not None:
                size, digest = _hash_file(path)
                found.append(SourceFile(rel, kind, size, digest))
        return tuple(found)

    @property
    def fingerprint(self) -> str:
        """sha256 over every file's relative path, size and content hash (and the field)."""
        digest = hashlib.sha256(f"{self.kind}\0{self.text_field}\0".encode())
        for f in self.files:
            digest.update(f"{f.path}\0{f.bytes}\0{f.sha256}\n".encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        """The manifest's ``dataset`` entry (no absolute path: a moved copy still matches)."""
        return {"kind": self.kind, "name": self.root.name, "text_field": self.text_field,
                "files": [f.__dict__ for f in self.files], "fingerprint": self.fingerprint}

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    # ---- reading ---------------------------------------------------------------------------
    def documents(self) -> Iterator[tuple[str, int]]:
        """(text, bytes of input consumed so far) for every document; the byte count drives
        the progress bar's ETA."""
        if self.kind == "hf":
            yield from self._hf_documents()
            return
        done = 0
        for f in self.files:
            path = self.root if self.root.is_file() else self.root / f.path
            reader = {"text": self._text, "jsonl": self._jsonl, "parquet": self._parquet}[f.kind]
            for text, at in reader(path):
                yield text, done + min(at, f.bytes)
            done += f.bytes

    @staticmethod
    def _text(path: Path) -> Iterator[tuple[str, int]]:
        try:
            data = path.read_bytes()
            yield data.decode("utf-8"), len(data)
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path} is not UTF-8 text (byte {exc.start}); convert it or "
                               f"leave it out of the dataset folder") from exc
        except OSError as exc:
            raise DatasetError(f"cannot read dataset file {path}: {exc}") from exc

    def _jsonl(self, path: Path) -> Iterator[tuple[str, int]]:
        try:
            with open(path, "rb") as handle:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        yield self._field(_json_line(line, path, number), path, number), \
                            handle.tell()
        except OSError as exc:
            raise DatasetError(f"cannot read dataset file {path}: {exc}") from exc

    def _field(self, record: object, path: Path, where: object) -> str:
        value = record.get(self.text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise DatasetError(f"{path} record {where} has no string field "
                               f"{self.text_field!r}; pass text_field= (--text-field) naming "
                               f"the field that holds the text")
        return value

    def _parquet(self, path: Path) -> Iterator[tuple[str, int]]:
        pq = _pyarrow_parquet()
        try:
            pfile = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError
            raise DatasetError(f"cannot read Parquet file {path}: {exc}") from exc
        if self.text_field not in pfile.schema_arrow.names:
            raise DatasetError(f"Parquet file {path} has no column {self.text_field!r} "
                               f"(columns: {pfile.schema_arrow.names}); pass text_field=")
        groups = max(1, pfile.num_row_groups)
        size = path.stat().st_size
        for g in range(pfile.num_row_groups):
            column = pfile.read_row_group(g, columns=[self.text_field]).column(0)
            for value in column.to_pylist():
                if isinstance(value, str):
                    yield value, size * g // groups
        return

    def _hf_documents(self) -> Iterator[tuple[str, int]]:
        try:
            import datasets
        except ImportError as exc:
            raise DatasetError(f"{self.root} is a saved HF dataset; reading it needs the "
                               f"optional 'datasets' package: pip install datasets") from exc
        try:
            data = datasets.load_from_disk(str(self.root))
        except Exception as exc:
            raise DatasetError(f"cannot load the HF dataset {self.root}: {exc}") from exc
        if not isinstance(data, datasets.Dataset):
            raise DatasetError(f"{self.root} holds several splits {list(data)}; give the "
                               f"folder of one split (e.g. {self.root}/train)")
        if self.text_field not in data.column_names:
            raise DatasetError(f"HF dataset {self.root} has no column {self.text_field!r} "
                               f"(columns: {data.column_names}); pass text_field=")
        total, rows = self.total_bytes, max(1, len(data))
        for i, row in enumerate(data.select_columns([self.text_field])):
            value = row[self.text_field]
            if isinstance(value, str):
                yield value, total * i // rows


def _json_line(line: bytes, path: Path, number: int) -> object:
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} line {number} is not valid JSON ({exc}); every line of a "
                           f".jsonl file must be one JSON object") from exc


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError("reading Parquet needs pyarrow: pip install torch-mi[harvest] "
                           "(or pip install pyarrow)") from exc
    return pq
