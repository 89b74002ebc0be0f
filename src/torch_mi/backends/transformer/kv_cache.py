"""KVCache: keys (after RoPE) and values per layer, for incremental decoding.

Each layer keeps one preallocated buffer [B, Hkv, capacity, d] that doubles when full, so a
decoding step appends in place instead of re-copying the whole history.

A forward that raises must leave the caller's cache as it was: :meth:`KVCache.snapshot`
records the lengths and buffer references (a few ints and pointers, no tensor copy) and
:meth:`KVCache.rollback` restores them. Positions written past a restored length are
invisible, so the cache reads exactly as before the failed call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ...errors import HookError, InputError


class KVSnapshot(NamedTuple):
    """What :meth:`KVCache.rollback` restores (references only, no copies)."""

    keys: tuple
    values: tuple
    lengths: tuple[int, ...]
    seen_tokens: int


class KVCache:
    """Per-layer K/V store. ``seq_len`` counts stored positions; ``seen_tokens`` counts every
    position ever appended (it survives ``trim_to``, so new positions keep their RoPE index)."""

    def __init__(self, n_layers: int = 0) -> None:
        self._k: list[torch.Tensor | None] = [None] * n_layers
        self._v: list[torch.Tensor | None] = [None] * n_layers
        self._len = [0] * n_layers
        self.seen_tokens = 0

    # ---- inspection and size limits ----------------------------------------------------
    def n_layers(self) -> int:
        return len(self._k)

    def seq_len(self) -> int:
        """Stored positions (of the first populated layer; 0 if empty)."""
        for length in self._len:
            if length:
                return length
        return 0

    def is_empty(self) -> bool:
        return self.seq_len() == 0

    def batch_size(self) -> int | None:
        """Rows held (of the first populated layer), or None for an empty cache."""
        for buf, length in zip(self._k, self._len, strict=True):
            if buf is not None and length:
                return buf.shape[0]
        return None

    # ---- transactions ---------------------------------------------------------------
    def snapshot(self) -> KVSnapshot:
        """The cache's state before a call (no tensor is copied)."""
        return KVSnapshot(tuple(self._k), tuple(self._v), tuple(self._len), self.seen_tokens)

    def rollback(self, snap: KVSnapshot) -> None:
        """Undo everything since ``snap``: a failed forward leaves the cache as it was."""
        self._k, self._v = list(snap.keys), list(snap.values)
        self._len, self.seen_tokens = list(snap.lengths), snap.seen_tokens

    def check_compatible(self, *, n_layers: int, batch: int, kv_heads: int, head_dim: int,
                         dtype: torch.dtype, device: torch.device) -> None:
        """InputError unless this cache can take positions of a call with ``batch`` rows
        on a model of this geometry (it must come from ``make_state()`` of the same model
        and the same batch)."""
        if self.n_layers() != n_layers:
            raise InputError(f"state: this KVCache has {self.n_layers()} layers, the model has "
                             f"{n_layers}; use model.make_state() of this model")
        held = self.batch_size()
        if held is not None and held != batch:
            raise InputError(
                f"state: this KVCache holds a batch of {held} sequence(s), the input_ids have "
                f"batch {batch}; pass {held} rows, or start a new cache with model.make_state()")
        for layer, buf in enumerate(self._k):
            if buf is None or not self._len[layer]:
                continue
            expected = (kv_heads, head_dim)
            if (buf.shape[1], buf.shape[3]) != expected or buf.dtype != dtype \
                    or buf.device != device:
                raise InputError(
                    f"state: layer {layer} of this KVCache holds keys [B, {buf.shape[1]}, S, "
                    f"{buf.shape[3]}] {buf.dtype} on {buf.device}; this model needs "
                    f"[B, {kv_heads}, S, {head_dim}] {dtype} on {device}: the cache comes "
                    f"from another model; use model.make_state() of this model")

    def clear(self) -> None:
        n = self.n_layers()
        self._k, self._v, self._len = [None] * n, [None] * n, [0] * n
        self.seen_tokens = 0

    def layer(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(K, V) of one layer, each [B,Hkv,S,d], or (None, None) if not populated."""
        self._check(layer)
        if self._k[layer] is None:
            return None, None
        n = self._len[layer]
        return self._k[layer][:, :, :n], self._v[layer][:, :, :n]

    def memory_usage(self) -> int:
        """Bytes held by stored K and V (allocated capacity, not just the used part)."""
        total = 0
        for buf in (*self._k, *self._v):
            if buf is not None:
                total += buf.numel() * buf.element_size()
        return total

    def trim_to(self, max_len: int) -> bool:
        """Keep the last ``max_len`` positions of every layer; False if already short enough."""
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 0:
            raise InputError(f"KVCache.trim_to(max_len) needs an int >= 0, got {max_len!r}")
        if self.seq_len() <= max_len:
            return False
        for i in range(self.n_layers()):
            if self._k[i] is None:
                continue
            k, v = self.layer(i)
            self._k[i] = k[:, :, -max_len:].contiguous() if max_len else None
            self._v[i] = v[:, :, -max_len:].contiguous() if max_len else None
            self._len[i] = max_len
        return True

    def enforce_memory_limit(self, max_bytes: int) -> bool:
        """If usage exceeds ``max_bytes``, trim to 3/4 of the current length."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise InputError(f"KVCache.enforce_memory_limit(max_bytes) needs an int >= 0, got "
                             f"{max_bytes!r}")
        if self.memory_usage() <= max_bytes:
            return False
        keep = (3 * self.seq_len()) // 4
        return keep > 0 and self.trim_to(keep)

    # ---- used by the attention layers -------------------------------------------------
    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append new positions [B,Hkv,s,d]; return all stored (K, V) for this layer."""
        self._check(layer)
        n, s = self._len[layer], k.shape[2]
        buf_k = self._k[layer]
        if buf_k is None or buf_k.shape[2] < n + s or buf_k.shape[0] != k.shape[0]:
            self._grow(layer, k, v, n + s)
        self._k[layer][:, :, n:n + s] = k
        self._v[layer][:, :, n:n + s] = v
        self._len[layer] = n + s
        if layer == 0:
            self.seen_tokens += s
        return self._k[layer][:, :, :n + s], self._v[layer][:, :, :n + s]

    def _grow(self, layer: int, k: torch.Tensor, v: torch.Tensor, needed: int) -> None:
        capacity = max(needed, 2 * (self._k[layer].shape[2] if self._k[layer] is not None else 0),
                       64)
        b, h, _, d = k.shape
        new_k = k.new_empty(b, h, capacity, d)
        new_v = v.new_empty(b, h, capacity, v.shape[3])
        n = self._len[layer]
        if n:
            new_k[:, :, :n] = self._k[layer][:, :, :n]
            new_v[:, :, :n] = self._v[layer][:, :, :n]
        self._k[layer], self._v[layer] = new_k, new_v

    def _check(self, layer: int) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layers():
            raise HookError(f"KVCache has {self.n_layers()} layers; layer {layer} is out of range")

    def __repr__(self) -> str:
        return (f"KVCache(layers={self.n_layers()}, seq_len={self.seq_len()}, "
                f"bytes={self.memory_usage()})")
