"""Shared pieces of the family translators (HF ``config.json`` -> TransformerConfig)."""

from __future__ import annotations

from typing import Any

from ....errors import ConfigError
from .checks import MAX_LAYERS, MAX_POSITIONS, MAX_WIDTH, as_count
from .hf_keys import HFKeys, read_rope
from .types import FULL_ATTENTION, LAYER_TYPES, SLIDING_ATTENTION, TransformerConfig

_ABSENT = object()


def nullable(keys: HFKeys, key: str, default_if_absent: Any) -> Any:
    """HF semantics for optional features: absent -> class default, explicit null -> off."""
    keys.used.add(key)
    value = keys.hf.get(key, _ABSENT)
    return default_if_absent if value is _ABSENT else value


def sliding_window(keys: HFKeys, default_if_absent: int | None = None) -> int | None:
    """The ``sliding_window`` key: null turns the window off, anything else must be a
    positive integer (0 or a string would silently change which layers slide)."""
    value = nullable(keys, "sliding_window", default_if_absent)
    if value is None:
        return None
    return as_count(value, "sliding_window", keys.where, minimum=1, maximum=MAX_POSITIONS)


def dims(keys: HFKeys, head_dim_default: int | None = None) -> dict[str, int]:
    """The five required sizes plus heads, KV heads and head_dim."""
    hidden = keys.int("hidden_size", maximum=MAX_WIDTH)
    heads = keys.int("num_attention_heads", maximum=MAX_WIDTH)
    layers = keys.int("num_hidden_layers", maximum=MAX_LAYERS)
    inter = keys.int("intermediate_size", maximum=MAX_WIDTH)
    vocab = keys.int("vocab_size", maximum=MAX_WIDTH)
    if heads == 0:
        raise ConfigError(f"{keys.where}: num_attention_heads must be positive")
    kv = keys.int("num_key_value_heads", heads, maximum=MAX_WIDTH)
    fallback = head_dim_default if head_dim_default is not None else hidden // heads
    head_dim = keys.int("head_dim", fallback, maximum=MAX_WIDTH)
    return dict(hidden_size=hidden, num_attention_heads=heads, num_layers=layers,
                intermediate_size=inter, vocab_size=vocab, num_kv_heads=kv, head_dim=head_dim)


def layer_types(keys: HFKeys, num_layers: int, window: int | None,
                default: list[str] | None = None) -> tuple[str, ...]:
    """Per-layer attention types: HF ``layer_types`` when given, else ``default``, else
    every layer slides iff a window is set."""
    given = keys.opt("layer_types")
    if given is not None:
        if not isinstance(given, list) or any(not isinstance(t, str) or t not in LAYER_TYPES
                                              for t in given):
            raise ConfigError(f"{keys.where}: layer_types must list {LAYER_TYPES}, got {given!r}")
        if SLIDING_ATTENTION in given and window is None:
            raise ConfigError(f"{keys.where}: layer_types has sliding layers but no sliding_window")
        return tuple(given)
    if default is not None:
        return tuple(default)
    return ((SLIDING_ATTENTION if window else FULL_ATTENTION),) * num_layers


def qwen_windows(keys: HFKeys, num_layers: int) -> tuple[int | None, tuple[str, ...]]:
    """Qwen's sliding window: on only with ``use_sliding_window``, and then only for layers
    i >= ``max_window_layers`` (unless ``layer_types`` says otherwise)."""
    window = sliding_window(keys, 4096) if keys.bool("use_sliding_window", False) else None
    keys.used.add("sliding_window")
    first_sliding = keys.int("max_window_layers", 28)
    default = [SLIDING_ATTENTION if window is not None and i >= first_sliding else FULL_ATTENTION
               for i in range(num_layers)]
    return window, layer_types(keys, num_layers, window, default)


def finish(keys: HFKeys, **fields: Any) -> TransformerConfig:
    """Read RoPE (unless given), check that no key is left over, build the config."""
    if "rope" not in fields:
        rope, partial = read_rope(keys, fields["max_position_embeddings"], 10_000.0)
        fields["rope"] = rope
        if partial is not None:
            fields.setdefault("partial_rotary_factor", partial)
    keys.finish()
    if not any(t == SLIDING_ATTENTION for t in fields.get("layer_types", ())):
        fields["sliding_window"] = None
    return TransformerConfig(**fields)
