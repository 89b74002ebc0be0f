"""The RWKV registry rows: ``model_type`` rwkv6 and rwkv7 build a GenericRwkv."""

from __future__ import annotations

from ..registry import Architecture, register_architecture
from .config import translate_rwkv6, translate_rwkv7
from .model import GenericRwkv
from .weight_map import rwkv6_weight_map, rwkv7_weight_map

ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(model_type="rwkv6", backend=GenericRwkv, translate_hf=translate_rwkv6,
                 weight_map=rwkv6_weight_map),
    Architecture(model_type="rwkv7", backend=GenericRwkv, translate_hf=translate_rwkv7,
                 weight_map=rwkv7_weight_map),
)
for _architecture in ARCHITECTURES:
    register_architecture(_architecture)

SUPPORTED_RWKV_MODEL_TYPES: tuple[str, ...] = ("rwkv6", "rwkv7")
