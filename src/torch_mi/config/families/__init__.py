"""Family registry: HF ``model_type`` -> translator to TransformerConfig."""

from __future__ import annotations

from collections.abc import Callable

from ..types import TransformerConfig
from . import gemma, gemma2, gemma3, llama, mistral, phi3, qwen2, qwen3, starcoder2

TRANSLATORS: dict[str, Callable[[dict], TransformerConfig]] = {
    "gemma": gemma.translate,
    "gemma2": gemma2.translate,
    "gemma3": gemma3.translate_multimodal,
    "gemma3_text": gemma3.translate,
    "llama": llama.translate,
    "mistral": mistral.translate,
    "phi3": phi3.translate,
    "qwen2": qwen2.translate,
    "qwen3": qwen3.translate,
    "starcoder2": starcoder2.translate,
}

# The seven families of candle-mi, and every model_type we translate.
SEED_MODEL_TYPES: tuple[str, ...] = ("gemma", "gemma2", "llama", "mistral", "phi3", "qwen2",
                                     "starcoder2")
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(TRANSLATORS))
