"""Attention masks: the cached causal mask, a standalone generation-mask helper, and the
per-call masks the generic transformer builds once per layer type.

Visibility rule (HF's): key slot j is visible from query slot i iff j <= i, and, on a
sliding layer with window W, i - W < j; padded key slots are never visible. A query row
with no visible key gets a zero pattern (never NaN).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock

import torch

_CAUSAL_CACHE: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_CAUSAL_CACHE_SIZE = 32
_LOCK = Lock()


def create_causal_mask(seq_len: int, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive causal mask [1,1,S,S]: 0 where j <= i, -inf above the diagonal (cached)."""
    key = (int(seq_len), torch.device(device), dtype)
    with _LOCK:
        mask = _CAUSAL_CACHE.get(key)
        if mask is not None:
            _CAUSAL_CACHE.move_to_end(key)
            return mask
    full = torch.full((seq_len, seq_len), float("-inf"), device=device, dtype=dtype)
    mask = torch.triu(full, diagonal=1)[None, None]
    with _LOCK:
        _CAUSAL_CACHE[key] = mask
        while len(_CAUSAL_CACHE) > _CAUSAL_CACHE_SIZE:
            _CAUSAL_CACHE.popitem(last=False)
    return mask


def create_generation_mask(new_tokens: int, total_len: int, start: int,
                           device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [1,1,new,total] for ``new_tokens`` queries placed at slots
    ``start .. start+new-1`` over ``total_len`` keys: row i sees keys j <= start + i."""
    if new_tokens == 1:
        return torch.zeros(1, 1, 1, total_len, device=device, dtype=dtype)
    rows = torch.arange(new_tokens, device=device)[:, None] + start
    cols = torch.arange(total_len, device=device)[None, :]
    mask = torch.zeros(new_tokens, total_len, device=device, dtype=dtype)
    return mask.masked_fill(cols > rows, float("-inf"))[None, None]


def clear_mask_caches() -> None:
    """Drop every cached causal mask."""
    with _LOCK:
        _CAUSAL_CACHE.clear()


@dataclass
class LayerMask:
    """Which keys each query sees, for one layer type in one call.

    ``kind`` is "causal" (plain causal, Sq == Sk, no padding: SDPA's is_causal), "none"
    (every key visible) or "dense" (an explicit boolean ``allowed`` [B|1,1,Sq,Sk]).
    """

    kind: str
    q_len: int
    allowed: torch.Tensor | None = None
    may_empty_rows: bool = False  # True only with key padding (a padded query sees nothing)
    _additive: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    def additive(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """Float mask to add to scores (0 / -inf), or None when nothing is masked."""
        if self.kind == "none":
            return None
        if self.kind == "causal":
            return create_causal_mask(self.q_len, device, dtype)
        if dtype not in self._additive:
            zeros = torch.zeros(self.allowed.shape, device=device, dtype=dtype)
            self._additive[dtype] = zeros.masked_fill(~self.allowed, float("-inf"))
        return self._additive[dtype]


def build_layer_mask(q_len: int, past_len: int, window: int | None,
                     key_padding: torch.Tensor | None, device: torch.device) -> LayerMask:
    """Mask for queries at slots past..past+q_len-1 over keys 0..past+q_len-1.

    ``key_padding`` is the [B, past+q_len] attention mask (1 real, 0 padding) or None.
    """
    total = past_len + q_len
    if key_padding is None and (window is None or total <= window):
        if past_len == 0:
            return LayerMask("causal", q_len)
        if q_len == 1:
            return LayerMask("none", q_len)
    rows = torch.arange(past_len, total, device=device)[:, None]
    cols = torch.arange(total, device=device)[None, :]
    allowed = cols <= rows
    if window is not None:
        allowed = allowed & (cols > rows - window)
    allowed = allowed[None, None]  # [1,1,Sq,Sk]
    if key_padding is not None:
        allowed = allowed & key_padding.bool()[:, None, None, :]
    return LayerMask("dense", q_len, allowed, may_empty_rows=key_padding is not None)
