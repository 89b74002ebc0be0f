"""Model backends behind the :class:`MIBackend` protocol, and the architecture registry.

The built-in backends register their rows on import: ``transformer`` (every decoder-only
HF family) and ``rwkv`` (RWKV-6 and RWKV-7). See BACKENDS.md for adding a family or a backend.
"""

from . import rwkv, transformer
from .looped import LoopFeedback, LoopSpec, forward_looped, generate_looped
from .protocol import BlockLoop, MIBackend, SupportsMemoryPlan
from .registry import (
    Architecture,
    GGUFFormat,
    MultimodalLayout,
    Target,
    WeightMap,
    architecture_for,
    find_architecture,
    gguf_architecture,
    register_architecture,
    register_fallback,
    resolve_hf,
    supported_model_types,
    unregister_architecture,
)

__all__ = [
    "Architecture",
    "BlockLoop",
    "GGUFFormat",
    "LoopFeedback",
    "LoopSpec",
    "MIBackend",
    "MultimodalLayout",
    "SupportsMemoryPlan",
    "Target",
    "WeightMap",
    "architecture_for",
    "find_architecture",
    "forward_looped",
    "generate_looped",
    "gguf_architecture",
    "register_architecture",
    "register_fallback",
    "resolve_hf",
    "rwkv",
    "supported_model_types",
    "transformer",
    "unregister_architecture",
]
