"""The architecture registry: one row per ``model_type``.

A row says how to read a family's HF ``config.json`` (and, where llama.cpp has a format for
it, its GGUF metadata), where each checkpoint tensor goes, and which backend class to build.
Loaders only ever ask this table; a new family is one file plus one row, a new backend
registers its rows here and nowhere else. Unknown ``model_type``s go to the registered
fallbacks (auto-config) in registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..errors import ConfigError
from .protocol import MIBackend


@dataclass(frozen=True)
class Target:
    """Where a checkpoint tensor goes: a parameter, optionally a block of its rows."""

    param: str
    rows: tuple[int, int] | None = None


@dataclass(frozen=True)
class WeightMap:
    """Checkpoint name -> Target for every tensor a config implies.

    ``tied_head`` names a checkpoint tensor that may be present although the model ties it
    to parameter ``tied_to``: it is accepted only if it equals that parameter."""

    targets: Mapping[str, Target]
    tied_head: str | None = None
    tied_to: str | None = None

    def with_prefix(self, prefix: str) -> WeightMap:
        """The same map for a checkpoint that nests the model under ``prefix``."""
        targets = {prefix + name: target for name, target in self.targets.items()}
        head = None if self.tied_head is None else prefix + self.tied_head
        return WeightMap(targets, head, self.tied_to)


class BackendFactory(Protocol):
    """A backend class: builds an unfilled model for a config (the loader fills it)."""

    @classmethod
    def empty(cls, config: Any, device: torch.device | str,
              dtype: torch.dtype) -> MIBackend: ...


@dataclass(frozen=True)
class GGUFFormat:
    """How one llama.cpp ``general.architecture`` maps onto a family.

    ``translate`` reads the header (metadata + tensor infos) into a config; ``block_names``
    maps llama.cpp's per-block tensor names to HF's; ``permuted_heads(config, hf_name)``
    gives the head count of tensors whose rows llama.cpp permuted for its RoPE kernel (None
    for the others); ``norm_offset`` is what llama.cpp added to norm weights (Gemma: 1);
    ``consumed(header)`` lists tensors the config absorbed."""

    arch: str
    translate: Callable[[Any], Any]
    block_names: Mapping[str, str]
    permuted_heads: Callable[[Any, str], int | None] = lambda config, name: None
    norm_offset: float = 0.0
    consumed: Callable[[Any], frozenset[str]] = lambda header: frozenset()


@dataclass(frozen=True)
class MultimodalLayout:
    """A wrapper checkpoint (``text_config`` present) whose language model we load."""

    text_prefix: str
    skip_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Architecture:
    """One registry row."""

    model_type: str
    backend: BackendFactory
    translate_hf: Callable[[dict], Any]
    weight_map: Callable[[Any], WeightMap]
    gguf: GGUFFormat | None = None
    multimodal: MultimodalLayout | None = None
    aliases: tuple[str, ...] = field(default=())


# A fallback gets (hf config, tensor names) and returns (row, config), or None to pass.
Fallback = Callable[[dict, Sequence[str]], "tuple[Architecture, Any] | None"]

_ROWS: dict[str, Architecture] = {}
_GGUF: dict[str, Architecture] = {}
_FALLBACKS: list[Fallback] = []


def register_architecture(row: Architecture) -> Architecture:
    """Add a row; ConfigError if its model_type or GGUF architecture is taken."""
    for model_type in (row.model_type, *row.aliases):
        if model_type in _ROWS and _ROWS[model_type] is not row:
            raise ConfigError(f"model_type {model_type!r} is registered twice")
        _ROWS[model_type] = row
    if row.gguf is not None:
        if row.gguf.arch in _GGUF and _GGUF[row.gguf.arch] is not row:
            raise ConfigError(f"GGUF architecture {row.gguf.arch!r} is registered twice")
        _GGUF[row.gguf.arch] = row
    return row


def unregister_architecture(model_type: str) -> None:
    """Remove a row (tests that register toy backends clean up with this)."""
    row = _ROWS.pop(model_type, None)
    if row is None:
        return
    for alias in row.aliases:
        _ROWS.pop(alias, None)
    if row.gguf is not None:
        _GGUF.pop(row.gguf.arch, None)


def register_fallback(fallback: Fallback) -> None:
    """Add a resolver for model_types no row names (tried in registration order)."""
    if fallback not in _FALLBACKS:
        _FALLBACKS.append(fallback)


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(_ROWS))


def find_architecture(model_type: str) -> Architecture | None:
    return _ROWS.get(model_type)


def architecture_for(model_type: object) -> Architecture:
    """The row of ``model_type``; ConfigError naming the supported ones otherwise."""
    row = _ROWS.get(model_type) if isinstance(model_type, str) else None
    if row is None:
        raise ConfigError(
            f"unsupported model_type {model_type!r}; supported: "
            f"{', '.join(supported_model_types())} (unknown LLaMA-like families load through "
            f"auto-config: from_hf_config_auto, or a model folder with its safetensors)")
    return row


def resolve_hf(hf: dict, tensor_names: Sequence[str] | None = None) -> tuple[Architecture, Any]:
    """(row, config) for an HF ``config.json``: the family's translator when a row names the
    model_type, else the first fallback that accepts it (needs the tensor names)."""
    model_type = hf.get("model_type") if isinstance(hf, dict) else None
    if not model_type:
        raise ConfigError("config.json has no 'model_type'; it is needed to pick the family")
    if not isinstance(model_type, str):
        raise ConfigError(f"config.json's 'model_type' must be a string naming the family, got "
                          f"{model_type!r}; supported: {', '.join(supported_model_types())}")
    row = _ROWS.get(model_type)
    if row is not None:
        return row, row.translate_hf(hf)
    if tensor_names is not None:
        for fallback in _FALLBACKS:
            found = fallback(hf, tensor_names)
            if found is not None:
                return found
    architecture_for(model_type)  # raises with the supported list
    raise AssertionError("unreachable")


def gguf_architecture(arch: object, where: str) -> Architecture:
    """The row whose GGUF format has ``general.architecture == arch``."""
    row = _GGUF.get(arch) if isinstance(arch, str) else None
    if row is None:
        raise ConfigError(
            f"{where}: GGUF architecture {arch!r} is not supported; supported GGUF "
            f"architectures: {', '.join(sorted(_GGUF))}. For other models, load the HF "
            f"safetensors checkpoint instead")
    return row
