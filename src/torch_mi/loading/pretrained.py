"""Turn a local model folder (HF layout) into a loaded backend + tokenizer.

The architecture registry picks the family (or auto-config for unknown LLaMA-like types),
the backend class and the weight map; nothing here names a backend. The order is what
makes hostile folders cheap to refuse: config.json and the safetensors headers are read
and checked against each other (names, parameter count, memory) before anything is
allocated; only then are the weights copied, each checked to be finite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from ..backends.protocol import MIBackend
from ..backends.registry import WeightMap, resolve_hf
from ..errors import ConfigError, TokenizerError
from ..tokenizer import MITokenizer
from ..world_tokenizer import END_OF_TEXT_ID, WorldTokenizer, find_vocab_file
from .files import parse_json, read_bytes, read_json
from .preflight import check_before_allocating
from .safetensors_io import SafetensorsSource
from .weights import is_ignored, load_weights

MAX_TOKENIZER_BYTES = 256 * 1024 * 1024
SPECIAL_ID_KEYS = ("eos_token_id", "bos_token_id", "pad_token_id")


def read_config_json(directory: Path) -> dict:
    """config.json as a dict with a model_type (ConfigError for anything else)."""
    path = Path(directory) / "config.json"
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"no config.json in {directory}; a model folder needs config.json "
                          f"next to its safetensors weights")
    config = read_json(path, "config file", ConfigError)
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(config).__name__}")
    if not config.get("model_type"):
        raise ConfigError(f"{path} has no 'model_type'; it is needed to pick the family")
    return config


def load_backend_dir(directory: Path, device: torch.device, dtype: torch.dtype,
                     *, allow_nonfinite: bool = False) -> MIBackend:
    """The backend of a local HF-layout folder, weights loaded strictly into ``dtype``."""
    directory = Path(directory)
    hf = read_config_json(directory)
    with SafetensorsSource.from_directory(directory) as source:
        row, config = resolve_hf(hf, list(source.names()))
        multimodal = row.multimodal if "text_config" in hf else None
        skip = multimodal.skip_prefixes if multimodal is not None else ()
        numels = (e.numel for n, e in source.entries.items() if not is_ignored(n, skip))

        def weight_map() -> WeightMap:
            weights = row.weight_map(config)
            return weights if multimodal is None else weights.with_prefix(multimodal.text_prefix)

        weights = check_before_allocating(config, list(source.names()), numels, weight_map,
                                          device=device, dtype=dtype, skip_prefixes=skip,
                                          where=f"{directory / 'config.json'}")
        model = row.backend.empty(config, device, dtype)
        load_weights(model, source, weights, skip_prefixes=skip,
                     check_finite=not allow_nonfinite)
    return model


def _special_id(hf: dict, key: str, where: str) -> tuple[int, ...]:
    """A special-token id entry (one id or a list) as a tuple of ids, type-checked."""
    value = hf.get(key)
    values = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ConfigError(f"{where}: '{key}' must be a non-negative token id or a list of them, "
                          f"got {value!r}")
    return tuple(values)


def _eos_ids(directory: Path, hf_config: dict) -> tuple[int, ...]:
    """eos ids of config.json, overridden by generation_config.json when it names them."""
    eos = _special_id(hf_config, "eos_token_id", f"{directory / 'config.json'}")
    generation = directory / "generation_config.json"
    if generation.exists() or generation.is_symlink():
        gen = read_json(generation, "generation config", ConfigError)
        if not isinstance(gen, dict):
            raise ConfigError(f"{generation} must hold a JSON object, got {type(gen).__name__}")
        if gen.get("eos_token_id") is not None:
            eos = _special_id(gen, "eos_token_id", str(generation))
    return eos


def load_tokenizer_dir(directory: Path, hf_config: dict | None = None) -> MITokenizer | None:
    """The folder's tokenizer.json, else its RWKV world vocabulary, or None if it has neither."""
    directory = Path(directory)
    path = directory / "tokenizer.json"
    hf_config = hf_config or {}
    if not path.exists() and not path.is_symlink():
        return load_world_tokenizer_dir(directory, hf_config)
    where = f"{directory / 'config.json'}"
    specials: dict[str, Any] = {key: _special_id(hf_config, key, where)
                                for key in ("bos_token_id", "pad_token_id")}
    eos = _eos_ids(directory, hf_config)
    raw = read_bytes(path, "tokenizer file", TokenizerError, MAX_TOKENIZER_BYTES)
    parse_json(raw, f"tokenizer file {path}", TokenizerError)  # typed errors for bad JSON
    try:
        inner = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise TokenizerError(f"cannot load tokenizer {path}: {exc}") from exc
    return MITokenizer(inner, eos_token_ids=eos,
                       bos_token_id=next(iter(specials["bos_token_id"]), None),
                       pad_token_id=next(iter(specials["pad_token_id"]), None))


def load_world_tokenizer_dir(directory: Path, hf_config: dict) -> WorldTokenizer | None:
    """The RWKV world tokenizer of a folder holding ``rwkv_vocab_v20230424.txt`` (the RWKV HF
    repos ship it with a remote-code tokenizer class instead of a tokenizer.json), or None.
    Its ids are checked against config.json's ``vocab_size``; eos ids default to 0."""
    vocab_file = find_vocab_file(directory)
    if vocab_file is None:
        return None
    where = f"{directory / 'config.json'}"
    vocab_size = hf_config.get("vocab_size")
    if vocab_size is not None and (not isinstance(vocab_size, int) or isinstance(vocab_size, bool)
                                   or vocab_size <= 256):
        raise ConfigError(f"{where}: 'vocab_size' must be an int above 256 for an RWKV world "
                          f"model, got {vocab_size!r}")
    eos = _eos_ids(directory, hf_config) or (END_OF_TEXT_ID,)
    pad = _special_id(hf_config, "pad_token_id", where)
    return WorldTokenizer.from_file(vocab_file, vocab_size=vocab_size, eos_token_ids=eos,
                                    pad_token_id=next(iter(pad), None))
