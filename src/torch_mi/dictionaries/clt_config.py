"""Transcoder layouts: which of the published schemas a folder is, and its per-layer files.

Three layouts exist in the wild (inventory §6.1), told apart by the file listing alone so a
Hub repo can be classified before anything is downloaded:

* ``CLT_SPLIT``: circuit-tracer cross-layer transcoders, ``W_enc_{l}.safetensors`` +
  ``W_dec_{l}.safetensors`` (+ ``config.yaml``); features of layer ``l`` write to ``l..L-1``.
* ``PLT_BUNDLE``: per-layer transcoders, one ``layer_{l}.safetensors`` each (optional
  ``W_skip``).
* ``GEMMA_SCOPE_NPZ``: Gemma Scope transcoders, ``layer_{l}/width_*/average_l0_*/params.npz``.

A circuit-tracer ``config.yaml`` with ``model_kind: transcoder_set`` and a ``transcoders:``
list names the per-layer files explicitly (safetensors bundles or Gemma Scope NPZs).
``feature_input_hook`` / ``feature_output_hook`` are TransformerLens strings and resolve to
the torch-mi hook points that hold TL's tensors.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from torch_mi.errors import ConfigError, WeightError
from torch_mi.hooks.points import HookPoint

MAX_CONFIG_BYTES = 1 << 20
MAX_LAYERS = 1024
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")

_CLT_ENC = re.compile(r"^W_enc_(\d+)\.safetensors$")
_CLT_DEC = re.compile(r"^W_dec_(\d+)\.safetensors$")
_PLT = re.compile(r"^layer_(\d+)\.safetensors$")
_NPZ = re.compile(r"^layer_(\d+)/width_[^/]+/average_l0_[^/]+/params\.npz$")


class TranscoderSchema(enum.Enum):
    """On-disk layout of a transcoder (inventory §6.1)."""

    CLT_SPLIT = "clt_split"
    PLT_BUNDLE = "plt_bundle"
    GEMMA_SCOPE_NPZ = "gemma_scope_npz"

    @property
    def is_cross_layer(self) -> bool:
        return self is TranscoderSchema.CLT_SPLIT


# circuit-tracer's defaults when a config names no hooks.
_DEFAULT_HOOKS = {
    TranscoderSchema.CLT_SPLIT: ("hook_resid_mid", "hook_mlp_out"),
    TranscoderSchema.PLT_BUNDLE: ("hook_resid_mid", "hook_mlp_out"),
    TranscoderSchema.GEMMA_SCOPE_NPZ: ("ln2.hook_normalized", "hook_mlp_out"),
}


@dataclass(frozen=True)
class LayerFiles:
    """Relative paths (or ``hf://`` URIs) of one layer's encoder and decoder files."""

    encoder: str
    decoder: str


@dataclass(frozen=True)
class CltConfig:
    """What a transcoder folder holds, read from its listing, headers and ``config.yaml``."""

    schema: TranscoderSchema
    n_layers: int
    d_model: int
    n_features_per_layer: int
    activation: str  # "relu" | "jump_relu"
    model_name: str = "unknown"
    feature_input_hook: str = "hook_resid_mid"
    feature_output_hook: str = "hook_mlp_out"
    layer_files: tuple[LayerFiles, ...] = field(default=(), repr=False)
    has_skip: bool = False

    @property
    def n_features_total(self) -> int:
        return self.n_layers * self.n_features_per_layer

    @property
    def is_cross_layer(self) -> bool:
        return self.schema.is_cross_layer

    @property
    def is_jump_relu(self) -> bool:
        return self.activation == "jump_relu"

    def input_point(self, layer: int) -> HookPoint:
        """Where layer ``layer``'s encoder reads (TL string -> the point with TL's tensor)."""
        return _layer_point(self.feature_input_hook, layer)

    def output_point(self, layer: int) -> HookPoint:
        """Where layer ``layer``'s reconstruction is written (normally ``hook_mlp_out``)."""
        return _layer_point(self.feature_output_hook, layer)


def _layer_point(hook: str, layer: int) -> HookPoint:
    text = hook if hook.startswith("blocks.") else f"blocks.{layer}.{hook}"
    return HookPoint.parse(text.replace("{layer}", str(layer)))


@dataclass(frozen=True)
class Layout:
    """The outcome of detection: schema, per-layer files and config.yaml facts."""

    schema: TranscoderSchema
    layer_files: tuple[LayerFiles, ...]
    model_name: str
    input_hook: str
    output_hook: str


def _numbered(files: Iterable[str], pattern: re.Pattern) -> dict[int, str]:
    found: dict[int, str] = {}
    for name in files:
        match = pattern.match(name)
        if match:
            layer = int(match.group(1))
            if layer in found:
                raise ConfigError(f"two files for layer {layer}: {found[layer]!r} and {name!r}; "
                                  f"keep one, or list the ones to use in a transcoder_set "
                                  f"config.yaml")
            found[layer] = name
    return found


def _contiguous(found: dict[int, str], what: str) -> list[str]:
    """Files for layers 0..L-1, WeightError naming the missing layers otherwise."""
    if len(found) > MAX_LAYERS:
        raise ConfigError(f"{len(found)} {what} files: more than {MAX_LAYERS} layers")
    n = max(found) + 1
    missing = [layer for layer in range(n) if layer not in found]
    if missing:
        raise WeightError(f"{what} files are missing for layers {missing} (found "
                          f"{sorted(found)}); download the complete set")
    return [found[layer] for layer in range(n)]


def detect_schema(files: Iterable[str]) -> TranscoderSchema:
    """Classify a file listing (relative paths). CLT wins over PLT, PLT over Gemma Scope."""
    names = list(files)
    if any(_CLT_ENC.match(n) for n in names):
        return TranscoderSchema.CLT_SPLIT
    if any(_PLT.match(n) for n in names):
        return TranscoderSchema.PLT_BUNDLE
    if any(_NPZ.match(n) for n in names):
        return TranscoderSchema.GEMMA_SCOPE_NPZ
    refuse_pickles(names)  # a folder of .pt/.pth weights: say why it is refused
    shown = ", ".join(sorted(names)[:8]) or "no files"
    raise ConfigError(
        f"unknown transcoder layout ({shown}): expected circuit-tracer CLT files "
        f"W_enc_{{l}}.safetensors + W_dec_{{l}}.safetensors, per-layer bundles "
        f"layer_{{l}}.safetensors, Gemma Scope layer_{{l}}/width_*/average_l0_*/params.npz, "
        f"or a config.yaml with model_kind: transcoder_set and a transcoders: list")


def refuse_pickles(names: Iterable[str]) -> None:
    """Pickle-based checkpoints could run code when read: never open them."""
    for name in names:
        if name.lower().endswith(PICKLE_SUFFIXES):
            raise WeightError(f"{name!r} is a pickle-based checkpoint; torch-mi never unpickles "
                              f"weights. Convert it to safetensors (or an NPZ without objects)")


def read_config_yaml(path: Path) -> dict:
    """Parse a circuit-tracer ``config.yaml`` (safe loader, size-capped)."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {size} bytes; a transcoder config.yaml is at most "
                          f"{MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc}); fix or remove it") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping (model_name, model_kind, ...), got "
                          f"{type(data).__name__}")
    return data


def _hook_key(config: dict, key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"config.yaml {key} must be a TransformerLens hook string such as "
                          f"{default!r}, got {value!r}")
    return value.strip()


def _transcoder_list(config: dict) -> list[str]:
    entries = config.get("transcoders")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("config.yaml with model_kind: transcoder_set needs a non-empty "
                          "'transcoders:' list of per-layer files (local paths or hf:// URIs)")
    if len(entries) > MAX_LAYERS:
        raise ConfigError(f"config.yaml lists {len(entries)} transcoders; at most {MAX_LAYERS}")
    bad = [e for e in entries if not isinstance(e, str) or not e.strip()]
    if bad:
        raise ConfigError(f"config.yaml transcoders entries must be path strings, got {bad[:3]}")
    refuse_pickles(entries)
    return [e.strip() for e in entries]


def _set_schema(entries: list[str]) -> TranscoderSchema:
    kinds = {e.rsplit(".", 1)[-1].lower() for e in entries}
    if kinds == {"npz"}:
        return TranscoderSchema.GEMMA_SCOPE_NPZ
    if kinds == {"safetensors"}:
        return TranscoderSchema.PLT_BUNDLE
    raise ConfigError(f"transcoder_set files must all be .safetensors bundles or all Gemma "
                      f"Scope .npz files, got suffixes {sorted(kinds)}")


def detect_layout(files: list[str], config: dict) -> Layout:
    """Schema and per-layer files of a folder listing plus its (possibly empty) config."""
    kind = config.get("model_kind")
    if kind == "transcoder_set" and "transcoders" not in config:
        # circuit-tracer's own cache (save_transcoders_to_cache) and Hub sets without a list:
        # the per-layer files are the folder's layer_{l}.safetensors (resolve_transcoder_paths)
        schema = TranscoderSchema.PLT_BUNDLE
        if not any(_PLT.match(n) for n in files):
            raise ConfigError("config.yaml with model_kind: transcoder_set needs a non-empty "
                              "'transcoders:' list of per-layer files, or layer_{l}.safetensors "
                              "files next to it (circuit-tracer's cache layout)")
        layer_files = _listed_files(schema, files)
    elif kind == "transcoder_set" or (kind is None and "transcoders" in config
                                      and not any(_CLT_ENC.match(n) for n in files)):
        entries = _transcoder_list(config)
        schema = _set_schema(entries)
        layer_files = tuple(LayerFiles(e, e) for e in entries)
    else:
        if kind not in (None, "cross_layer_transcoder"):
            raise ConfigError(f"config.yaml model_kind {kind!r} is not supported; use "
                              f"'cross_layer_transcoder' or 'transcoder_set'")
        schema = detect_schema(files)
        layer_files = _listed_files(schema, files)
    hook_in, hook_out = _DEFAULT_HOOKS[schema]
    name = config.get("model_name", "unknown")
    return Layout(schema, layer_files, str(name) if name is not None else "unknown",
                  _hook_key(config, "feature_input_hook", hook_in),
                  _hook_key(config, "feature_output_hook", hook_out))


def _listed_files(schema: TranscoderSchema, files: list[str]) -> tuple[LayerFiles, ...]:
    if schema is TranscoderSchema.CLT_SPLIT:
        enc = _contiguous(_numbered(files, _CLT_ENC), "W_enc_{l}.safetensors")
        dec_found = _numbered(files, _CLT_DEC)
        missing = [layer for layer in range(len(enc)) if layer not in dec_found]
        if missing:
            raise WeightError(f"W_dec_{{l}}.safetensors files are missing for layers {missing}; "
                              f"a CLT needs one decoder file per encoder file")
        return tuple(LayerFiles(e, dec_found[i]) for i, e in enumerate(enc))
    pattern = _PLT if schema is TranscoderSchema.PLT_BUNDLE else _NPZ
    return tuple(LayerFiles(f, f) for f in _contiguous(_numbered(files, pattern), "layer"))


__all__ = [
    "CltConfig",
    "LayerFiles",
    "Layout",
    "TranscoderSchema",
    "detect_layout",
    "detect_schema",
    "read_config_yaml",
    "refuse_pickles",
]
