"""``MIModel.from_pretrained`` dispatch: embedded default, .gguf file, local folder, Hub id.

Returns the parts (backend, tokenizer, source); the api layer wraps them in an MIModel."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..backends.protocol import MIBackend
from ..errors import ConfigError
from ..tokenizer import MITokenizer
from .pretrained import load_backend_dir, load_tokenizer_dir, read_config_json


def is_local_path(model: str | os.PathLike) -> bool:
    text = os.fspath(model)
    return (Path(text).expanduser().exists() or text.startswith((".", "/", "~"))
            or text.endswith(".gguf"))


def load_parts(model: str | os.PathLike | None, *, revision: str | None, device: torch.device,
               dtype: torch.dtype) -> tuple[MIBackend, MITokenizer | None, str]:
    """(backend, tokenizer, source) for the embedded default, a .gguf, a folder or a repo."""
    if model is None:
        from .embedded import default_model_path

        model = default_model_path()
    text = os.fspath(model)
    path = Path(text).expanduser()
    if text.endswith(".gguf") or path.is_file():
        if not path.exists():
            raise ConfigError(f"GGUF file {path} does not exist")
        from .gguf_model import load_gguf_model

        backend, tokenizer = load_gguf_model(path, device, dtype)
        return backend, tokenizer, str(path)
    if path.is_dir():
        directory = path
    elif is_local_path(text):
        raise ConfigError(f"model path {text!r} does not exist (neither a folder nor a .gguf "
                          f"file); for a Hub model give its repo id, e.g. 'org/name'")
    else:
        from ..download import download_model_blocking

        directory = download_model_blocking(text, revision=revision)
    backend = load_backend_dir(directory, device, dtype)
    tokenizer = load_tokenizer_dir(directory, read_config_json(directory))
    return backend, tokenizer, text
