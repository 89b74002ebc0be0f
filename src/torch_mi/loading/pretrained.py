"""Turn a local model folder (HF layout) into a loaded backend + tokenizer.

The architecture registry picks the family (or auto-config for unknown LLaMA-like types),
the backend class and the weight map; nothing here names a backend."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..backends.protocol import MIBackend
from ..backends.registry import resolve_hf
from ..errors import ConfigError
from ..tokenizer import MITokenizer
from .safetensors_io import SafetensorsSource
from .weights import load_weights


def read_config_json(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.exists():
        raise ConfigError(f"no config.json in {directory}; a model folder needs config.json "
                          f"next to its safetensors weights")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ConfigError(f"{path} has no 'model_type'; it is needed to pick the family")
    return config


def load_backend_dir(directory: Path, device: torch.device, dtype: torch.dtype) -> MIBackend:
    """The backend of a local HF-layout folder, weights loaded strictly into ``dtype``."""
    directory = Path(directory)
    hf = read_config_json(directory)
    with SafetensorsSource.from_directory(directory) as source:
        row, config = resolve_hf(hf, list(source.names()))
        model = row.backend.empty(config, device, dtype)
        weights, skip = row.weight_map(config), ()
        if "text_config" in hf and row.multimodal is not None:
            weights = weights.with_prefix(row.multimodal.text_prefix)
            skip = row.multimodal.skip_prefixes
        load_weights(model, source, weights, skip_prefixes=skip)
    return model


def load_tokenizer_dir(directory: Path, hf_config: dict | None = None) -> MITokenizer | None:
    """The folder's tokenizer.json, or None if it has none."""
    path = Path(directory) / "tokenizer.json"
    if not path.exists():
        return None
    hf_config = hf_config or {}
    eos = hf_config.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    generation = Path(directory) / "generation_config.json"
    if generation.exists():
        try:
            gen_eos = json.loads(generation.read_text()).get("eos_token_id")
            if gen_eos is not None:
                eos_ids = tuple(gen_eos) if isinstance(gen_eos, list) else (gen_eos,)
        except (OSError, json.JSONDecodeError):
            pass
    return MITokenizer.from_file(path, eos_token_ids=eos_ids,
                                 bos_token_id=hf_config.get("bos_token_id"),
                                 pad_token_id=hf_config.get("pad_token_id"))
