"""Turn a local model folder (HF layout) into a loaded GenericTransformer + tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config.auto import auto_config, check_auto_compatibility
from ..config.families import TRANSLATORS
from ..config.types import TransformerConfig
from ..errors import ConfigError
from ..models.transformer import GenericTransformer
from ..tokenizer import MITokenizer
from .safetensors_io import SafetensorsSource
from .weights import hf_weight_map, load_weights, with_prefix

# Multimodal wrappers whose language model we load (the vision side is not loaded).
MULTIMODAL_LAYOUTS = {"gemma3": ("language_model.", ("vision_tower.", "multi_modal_projector."))}


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


def config_for_directory(directory: Path, source: SafetensorsSource) -> TransformerConfig:
    """Family translator for known model types, checked auto-config for the rest."""
    hf = read_config_json(directory)
    if hf["model_type"] in TRANSLATORS:
        return TRANSLATORS[hf["model_type"]](hf)
    names = list(source.names())
    check_auto_compatibility(hf, names).into_result()
    return auto_config(hf, names)[0]


def load_transformer_dir(directory: Path, device: torch.device, dtype: torch.dtype
                         ) -> GenericTransformer:
    directory = Path(directory)
    hf = read_config_json(directory)
    with SafetensorsSource.from_directory(directory) as source:
        config = config_for_directory(directory, source)
        model = GenericTransformer.empty(config, device, dtype)
        mapping, skip = hf_weight_map(config), ()
        if "text_config" in hf and hf["model_type"] in MULTIMODAL_LAYOUTS:
            prefix, skip = MULTIMODAL_LAYOUTS[hf["model_type"]]
            mapping = with_prefix(mapping, prefix)
        load_weights(model, source, mapping, tied=config.tie_word_embeddings,
                     skip_prefixes=skip)
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
