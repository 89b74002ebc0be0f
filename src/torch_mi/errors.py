"""Typed errors. Every message says what was wrong and what to do about it.

All errors derive from :class:`MIError`, so ``except MIError`` catches everything this
library raises on purpose; anything else escaping is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MIError(Exception):
    """Base class of every error torch-mi raises on purpose."""


class ConfigError(MIError):
    """A model config (HF ``config.json``, GGUF metadata, SAE cfg) cannot be used as given."""


class HookError(MIError):
    """A hook point is unknown, out of range for this model, or was not captured."""


class InterventionError(MIError):
    """An intervention or experiment spec is invalid (shape, dtype, range, kind)."""


class WeightError(MIError):
    """Checkpoint tensors do not match the model: missing, unused, or of the wrong shape."""


class TokenizerError(MIError):
    """The tokenizer is missing or cannot encode/decode what was asked."""


class DownloadError(MIError):
    """A Hub download or local-cache lookup failed."""


class MemoryReportError(MIError):
    """A memory measurement could not be taken."""


class InputError(MIError, ValueError):
    """Model input (token ids, attention mask, generation arguments) is invalid."""


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """Return ``" Did you mean 'a', 'b'?"`` for the closest candidates, or ``""`` if none."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=cutoff)
    if not matches:
        return ""
    return " Did you mean " + ", ".join(repr(m) for m in matches) + "?"
