"""The transformer families: one registry row each (translator, weight map, GGUF format).

Adding a family: a file here with ``translate(hf) -> TransformerConfig`` (and, if llama.cpp
has it, ``translate_gguf`` plus its tensor names), then one row below. See BACKENDS.md.
"""

from __future__ import annotations

from ...registry import (
    Architecture,
    GGUFFormat,
    MultimodalLayout,
    register_architecture,
    register_fallback,
)
from ..config.auto import auto_config, check_auto_compatibility
from ..model import GenericTransformer
from ..weight_map import hf_weight_map
from . import gemma, gemma2, gemma3, llama, mistral, phi3, qwen2, qwen3, starcoder2


def _row(model_type: str, translate, **extra) -> Architecture:
    """A GenericTransformer row; ``extra`` may override the weight map (default: HF names)."""
    fields = {"weight_map": hf_weight_map, **extra}
    return Architecture(model_type=model_type, backend=GenericTransformer,
                        translate_hf=translate, **fields)


ARCHITECTURES: tuple[Architecture, ...] = (
    _row("gemma", gemma.translate),
    _row("gemma2", gemma2.translate),
    _row("gemma3", gemma3.translate_multimodal,
         multimodal=MultimodalLayout("language_model.", ("vision_tower.",
                                                         "multi_modal_projector."))),
    _row("gemma3_text", gemma3.translate,
         gguf=GGUFFormat("gemma3", gemma3.translate_gguf, gemma3.GGUF_TENSOR_NAMES,
                         norm_offset=1.0)),
    _row("llama", llama.translate,
         gguf=GGUFFormat("llama", llama.translate_gguf, llama.GGUF_TENSOR_NAMES,
                         permuted_heads=llama.gguf_permuted_heads,
                         consumed=llama.gguf_consumed)),
    _row("mistral", mistral.translate),
    _row("phi3", phi3.translate),
    _row("qwen2", qwen2.translate),
    _row("qwen3", qwen3.translate),
    _row("starcoder2", starcoder2.translate),
)
for _architecture in ARCHITECTURES:
    register_architecture(_architecture)

# The registered model types other than gemma3 and qwen3 (docs/porting.md: model families).
SEED_MODEL_TYPES: tuple[str, ...] = ("gemma", "gemma2", "llama", "mistral", "phi3", "qwen2",
                                     "starcoder2")


def _auto_architecture(hf: dict, tensor_names) -> tuple[Architecture, object]:
    """Registry fallback for unknown model_types: checked auto-config (the compatibility
    report is the error when the checkpoint is not LLaMA-like)."""
    names = list(tensor_names)
    check_auto_compatibility(hf, names).into_result()
    config = auto_config(hf, names)[0]
    return _row(config.model_type, lambda raw: auto_config(raw, names)[0]), config


register_fallback(_auto_architecture)
