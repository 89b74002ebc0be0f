"""Opening checkpoint and config files safely: regular files only, bounded sizes.

A ``config.json`` that is a FIFO would block ``open`` forever, and a character device
(``/dev/zero``) never ends; both are refused before anything is read. Files are opened with
``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, so a file swapped for a
FIFO between the check and the open cannot block either.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import MIError

MAX_JSON_BYTES = 64 * 1024 * 1024  # configs are KBs, tokenizer.json tens of MBs at most
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """'a FIFO (named pipe)', 'a directory', ... for a non-regular ``st_mode``."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path, what: str, error: type[MIError]) -> int:
    """A read-only descriptor of ``path``; ``error`` if it is missing or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (OSError, ValueError) as exc:  # ValueError: an embedded NUL byte
        raise error(f"{what} {path} cannot be opened ({exc}); check the path and its "
                    f"permissions") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{what} {path} is {file_kind(mode)}, not a regular file; torch-mi reads "
                    f"only regular files (replace it with the real file)")
    return fd


def require_regular(path: Path, what: str, error: type[MIError]) -> int:
    """The size of ``path`` after checking, without blocking, that it is a regular file."""
    fd = open_regular(path, what, error)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def read_bytes(path: Path, what: str, error: type[MIError], limit: int) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes."""
    fd = open_regular(path, what, error)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise error(f"{what} {path} is {size:,} bytes, more than the {limit:,} bytes such a "
                        f"file can sensibly be; it is not the expected file")
        try:
            return handle.read(limit + 1)[:limit]
        except OSError as exc:
            raise error(f"{what} {path} cannot be read ({exc})") from exc


def parse_json(raw: bytes, where: str, error: type[MIError]) -> Any:
    """``json.loads`` with every failure (bad UTF-8, bad syntax, absurd nesting) typed."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text ({exc}); it is not a JSON file") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise error(f"{where} nests JSON values too deeply to be a real file") from exc


def read_json(path: Path, what: str, error: type[MIError], limit: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON content of a regular file (any JSON value; callers check the type)."""
    return parse_json(read_bytes(path, what, error, limit), f"{what} {path}", error)
