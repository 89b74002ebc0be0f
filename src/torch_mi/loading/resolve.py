"""``MIModel.from_pretrained`` dispatch: embedded default, .gguf file, local folder, Hub id."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ConfigError
from .pretrained import load_tokenizer_dir, load_transformer_dir, read_config_json


def load_model(model: str | os.PathLike | None, *, revision: str | None,
               device: torch.device, dtype: torch.dtype):
    from ..backend import MIModel, is_local_path

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
        return MIModel(backend, tokenizer, source=str(path))
    if path.is_dir():
        directory = path
    elif is_local_path(text):
        raise ConfigError(f"model path {text!r} does not exist (neither a folder nor a .gguf "
                          f"file); for a Hub model give its repo id, e.g. 'org/name'")
    else:
        from ..download import download_model_blocking

        directory = download_model_blocking(text, revision=revision)
    backend = load_transformer_dir(directory, device, dtype)
    tokenizer = load_tokenizer_dir(directory, read_config_json(directory))
    return MIModel(backend, tokenizer, source=text)
