"""KVCache: keys (after RoPE) and values per layer, for incremental decoding.

Each layer keeps one preallocated buffer [B, Hkv, capacity, d] that doubles when full, so a
decoding step appends in place instead of re-copying the whole history.
"""

from __future__ import annotations

import torch

from ...errors import HookError


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
        if not 0 <= layer < self.n_layers():
            raise HookError(f"KVCache has {self.n_layers()} layers; layer {layer} is out of range")

    def __repr__(self) -> str:
        return (f"KVCache(layers={self.n_layers()}, seq_len={self.seq_len()}, "
                f"bytes={self.memory_usage()})")
