"""Activation and attention caches (the transformer's KV cache is in backends.transformer)."""

from .activation import ActivationCache, FullActivationCache
from .attention import AttentionCache

__all__ = ["ActivationCache", "AttentionCache", "FullActivationCache"]
