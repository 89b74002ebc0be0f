"""Activation, attention and KV caches."""

from .kv import KVCache

__all__ = ["KVCache"]
