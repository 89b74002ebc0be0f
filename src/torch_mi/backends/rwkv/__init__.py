"""The RWKV backend: RWKV-6 (Finch) and RWKV-7 (Goose) as :class:`GenericRwkv`.

Importing the package registers the ``rwkv6`` and ``rwkv7`` rows of the architecture
registry. See BACKENDS.md and HOOKS.md (RWKV sections).
"""

from .architectures import ARCHITECTURES, SUPPORTED_RWKV_MODEL_TYPES
from .config import RwkvConfig, RwkvLoraDims, RwkvVersion, translate_rwkv6, translate_rwkv7
from .model import GenericRwkv
from .points import RWKV_POINTS
from .state import LayerState, RwkvState
from .weight_map import rwkv6_weight_map, rwkv7_weight_map

__all__ = [
    "ARCHITECTURES",
    "RWKV_POINTS",
    "SUPPORTED_RWKV_MODEL_TYPES",
    "GenericRwkv",
    "LayerState",
    "RwkvConfig",
    "RwkvLoraDims",
    "RwkvState",
    "RwkvVersion",
    "rwkv6_weight_map",
    "rwkv7_weight_map",
    "translate_rwkv6",
    "translate_rwkv7",
]
