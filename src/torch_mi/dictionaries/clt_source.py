"""Where a transcoder's files come from (a local folder, a config.yaml, or a Hub repo) and
what each layer's tensors are called in its schema; headers are checked per layer file.

Kept apart from :mod:`clt` so the transcoder itself only deals with tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch_mi.dictionaries.clt_config import (
    CltConfig,
    Layout,
    TranscoderSchema,
    detect_layout,
    read_config_yaml,
)
from torch_mi.dictionaries.clt_formats import NpzFile, SafetensorsFile, open_weights
from torch_mi.errors import DownloadError, WeightError

Resolver = Callable[[str], Path]


@dataclass(frozen=True)
class LayerKeys:
    """Tensor names of one layer in its files (``W_skip`` None where the schema has none)."""

    W_enc: str
    b_enc: str
    b_dec: str
    threshold: str
    W_dec: str
    W_skip: str | None


def layer_keys(schema: TranscoderSchema, layer: int) -> LayerKeys:
    if schema is TranscoderSchema.CLT_SPLIT:
        return LayerKeys(f"W_enc_{layer}", f"b_enc_{layer}", f"b_dec_{layer}",
                         f"threshold_{layer}", f"W_dec_{layer}", None)
    if schema is TranscoderSchema.PLT_BUNDLE:
        return LayerKeys("W_enc", "b_enc", "b_dec", "activation_function.threshold", "W_dec",
                         "W_skip")
    return LayerKeys("W_enc", "b_enc", "b_dec", "threshold", "W_dec", None)


def _hf_download(repo_id: str, filename: str, revision: str | None = None) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as exc:  # huggingface_hub raises many types; all mean "not available"
        raise DownloadError(f"cannot fetch {filename!r} from {repo_id!r} ({type(exc).__name__}: "
                            f"{exc}); check the name, your network or HF_HUB_OFFLINE and "
                            f"the local cache") from exc


def local_resolver(root: Path) -> Resolver:
    """Relative paths under ``root``; absolute paths as given; ``hf://owner/repo/path`` via
    the Hub cache."""

    def resolve(name: str) -> Path:
        if name.startswith("hf://"):
            parts = name[len("hf://"):].split("/", 2)
            if len(parts) != 3 or not all(parts):
                raise DownloadError(f"bad URI {name!r}: write hf://owner/repo/path/in/repo")
            return _hf_download(f"{parts[0]}/{parts[1]}", parts[2])
        path = Path(name)
        return path if path.is_absolute() else root / path

    return resolve


def hub_resolver(repo_id: str, revision: str | None) -> Resolver:
    inner = local_resolver(Path("."))

    def resolve(name: str) -> Path:
        if name.startswith("hf://"):
            return inner(name)
        return _hf_download(repo_id, name, revision)

    return resolve


def local_layout(path: Path) -> tuple[Layout, Resolver]:
    """Layout of a folder (or of a ``config.yaml``: its list, else the files next to it)."""
    if path.is_file():
        config = read_config_yaml(path)
        files = [] if "transcoders" in config else _listing(path.parent)
        return detect_layout(files, config), local_resolver(path.parent)
    if not path.is_dir():
        raise WeightError(f"transcoder path {path} does not exist; give a folder of transcoder "
                          f"files or a circuit-tracer config.yaml")
    config = read_config_yaml(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    return detect_layout(_listing(path), config), local_resolver(path)


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def hub_layout(repo_id: str, revision: str | None) -> tuple[Layout, Resolver]:
    """Layout of a Hub repo from its file listing (metadata only; nothing big downloaded)."""
    from huggingface_hub import list_repo_files

    try:
        files = list_repo_files(repo_id, revision=revision)
    except Exception as exc:
        raise DownloadError(f"cannot list the files of {repo_id!r} ({type(exc).__name__}: "
                            f"{exc}); check the repo name and network, or download it and use "
                            f"CrossLayerTranscoder.from_local") from exc
    config = {}
    if "config.yaml" in files:
        config = read_config_yaml(_hf_download(repo_id, "config.yaml", revision))
    return detect_layout(files, config), hub_resolver(repo_id, revision)


def _expect(reader: SafetensorsFile | NpzFile, name: str, shape: tuple[int, ...],
            layer: int) -> None:
    got = reader.info(name).shape
    if got != shape:
        raise WeightError(f"layer {layer}: {name} in {reader.path.name} has shape {got}, "
                          f"expected {shape}; the layer files do not belong together")


def check_layer(config: CltConfig, layer: int, enc: SafetensorsFile | NpzFile,
                dec: SafetensorsFile | NpzFile) -> None:
    """WeightError unless layer ``layer``'s headers match ``config`` (no data is read)."""
    keys, F, D = layer_keys(config.schema, layer), config.n_features_per_layer, config.d_model
    npz = config.schema is TranscoderSchema.GEMMA_SCOPE_NPZ
    _expect(enc, keys.W_enc, (D, F) if npz else (F, D), layer)
    _expect(enc, keys.b_enc, (F,), layer)
    _expect(enc, keys.b_dec, (D,), layer)
    if config.is_jump_relu:
        if keys.threshold not in enc.tensors:
            raise WeightError(f"layer {layer}: JumpReLU transcoder without {keys.threshold!r} "
                              f"in {enc.path.name}; every layer needs its threshold [F]")
        _expect(enc, keys.threshold, (F,), layer)
    dec_shape = (F, config.n_layers - layer, D) if config.is_cross_layer else (F, D)
    _expect(dec, keys.W_dec, dec_shape, layer)
    if keys.W_skip and keys.W_skip in dec.tensors:
        _expect(dec, keys.W_skip, (D, D), layer)


def build_config(layout: Layout, resolve: Resolver) -> CltConfig:
    """Sizes and activation from layer 0's encoder header (one small read)."""
    schema = layout.schema
    first = open_weights(resolve(layout.layer_files[0].encoder))
    keys = layer_keys(schema, 0)
    shape = first.info(keys.W_enc).shape
    if len(shape) != 2:
        raise WeightError(f"{keys.W_enc} must be 2-D, got shape {shape}")
    D, F = shape if schema is TranscoderSchema.GEMMA_SCOPE_NPZ else shape[::-1]
    jump = keys.threshold in first.tensors
    if schema is TranscoderSchema.GEMMA_SCOPE_NPZ and not jump:
        raise WeightError(f"{first.path}: Gemma Scope transcoders are JumpReLU but "
                          f"'threshold' is missing; the NPZ is incomplete")
    skip = keys.W_skip is not None and keys.W_skip in first.tensors
    return CltConfig(schema, len(layout.layer_files), D, F, "jump_relu" if jump else "relu",
                     layout.model_name, layout.input_hook, layout.output_hook,
                     layout.layer_files, skip)


__all__ = ["LayerKeys", "build_config", "check_layer", "hub_layout", "layer_keys",
           "local_layout"]
