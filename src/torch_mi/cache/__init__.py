"""Activation, attention and KV caches."""

from .activation import ActivationCache, FullActivationCache
from .attention import AttentionCache
from .kv import KVCache

__all__ = ["ActivationCache", "AttentionCache", "FullActivationCache", "KVCache"]
