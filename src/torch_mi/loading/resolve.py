"""``MIModel.from_pretrained`` dispatch: embedded default, .gguf file, local folder, Hub id.

Returns the parts (backend, tokenizer, source); the api layer wraps them in an MIModel."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from ..backends.protocol import MIBackend
from ..errors import ConfigError
from ..tokenizer import MITokenizer
from .files import file_kind
from .pretrained import load_backend_dir, load_tokenizer_dir, read_config_json


def is_local_path(model: str | os.PathLike) -> bool:
    text = os.fspath(model)
    try:
        exists = Path(text).expanduser().exists()
    except (OSError, ValueError, RuntimeError):  # too long a name, a NUL byte, no home dir
        exists = False
    return exists or text.startswith((".", "/", "~")) or text.endswith((".gguf", ".pth"))


def _model_text(model: object) -> str:
    """``model`` as a path/repo string; ConfigError for anything else (None, numbers, bytes)."""
    try:
        text = os.fspath(model)  # type: ignore[arg-type]
    except TypeError:
        text = None
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise ConfigError(f"model must be a Hub repo id ('org/name'), a model folder or a .gguf "
                          f"file path, got {model!r}")
    return text


def _kind(path: Path) -> str:
    """'file', 'dir', 'missing', or the name of a special file (FIFO, device, ...)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    return "dir" if stat.S_ISDIR(mode) else file_kind(mode)


def load_parts(model: str | os.PathLike | None, *, revision: str | None, device: torch.device,
               dtype: torch.dtype, allow_nonfinite: bool = False
               ) -> tuple[MIBackend, MITokenizer | None, str]:
    """(backend, tokenizer, source) for the embedded default, a .gguf, a folder or a repo."""
    if model is None:
        from .embedded import default_model_path

        model = default_model_path()
    text = _model_text(model)
    try:
        path = Path(text).expanduser()
    except RuntimeError as exc:  # "~user/..." for a user without a home directory
        raise ConfigError(f"model path {text!r} cannot be expanded ({exc}); give an absolute "
                          f"path") from exc
    kind = _kind(path)
    if kind not in ("file", "dir", "missing"):
        raise ConfigError(f"model path {path} is {kind}, not a model folder or a .gguf file")
    if kind == "file" or (kind == "missing" and text.endswith((".gguf", ".pth"))):
        if kind == "missing":
            raise ConfigError(f"{'GGUF' if text.endswith('.gguf') else 'checkpoint'} file "
                              f"{path} does not exist")
        if path.suffix == ".pth":  # a BlinkDL RWKV checkpoint (read with weights_only=True)
            from .pth import load_pth_model

            backend, tokenizer = load_pth_model(path, device, dtype,
                                                allow_nonfinite=allow_nonfinite)
            return backend, tokenizer, str(path)
        from .gguf_model import load_gguf_model

        backend, tokenizer = load_gguf_model(path, device, dtype, allow_nonfinite=allow_nonfinite)
        return backend, tokenizer, str(path)
    if kind == "dir":
        if text.endswith(".gguf"):
            raise ConfigError(f"{path} is a directory, not a .gguf file; pass the .gguf file "
                              f"itself (or a model folder whose name does not end in .gguf)")
        directory = path
    elif is_local_path(text):
        raise ConfigError(f"model path {text!r} does not exist (neither a folder nor a .gguf "
                          f"file); for a Hub model give its repo id, e.g. 'org/name'")
    else:
        from ..download import download_model_blocking

        directory = download_model_blocking(text, revision=revision)
    backend = load_backend_dir(directory, device, dtype, allow_nonfinite=allow_nonfinite)
    tokenizer = load_tokenizer_dir(directory, read_config_json(directory))
    return backend, tokenizer, text
