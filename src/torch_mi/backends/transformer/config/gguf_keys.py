"""Typed reading of GGUF metadata, shared by the families that have a GGUF translation.

llama.cpp keeps only what its own kernels need, so some HF fields are absent from a GGUF;
the family translators fill those in from the HF config-class defaults, exactly as
transformers does when it loads the same file (our oracle). A *header* here is anything with
``metadata`` (dict), ``tensors`` (name -> info with ``shape``, ``type_name``,
``num_elements``), ``path`` and ``raw(name)`` -- the loader's parsed GGUF file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ....errors import ConfigError
from .checks import MAX_LAYERS, MAX_POSITIONS, MAX_WIDTH, as_count, as_float, is_int
from .types import RopeConfig

ROPE_FREQS = "rope_freqs.weight"  # llama.cpp's precomputed Llama-3 frequency factors
# Llama-3.x RoPE settings (low_freq_factor, high_freq_factor, original context) that
# llama.cpp folds into rope_freqs; recognised by recomputing the factors.
LLAMA3_ROPE_CANDIDATES = ((1.0, 4.0, 8192),)


class Metadata:
    """Typed access to ``{arch}.*`` metadata keys with errors that name the key."""

    def __init__(self, file: Any) -> None:
        self.values = file.metadata
        self.where = f"GGUF {file.path.name}"
        arch = self.values.get("general.architecture")
        if not isinstance(arch, str):
            raise ConfigError(f"{self.where}: metadata has no 'general.architecture'; the file "
                              f"is not a model GGUF")
        self.arch = arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(f"{self.arch}.{key}", default)

    def _present(self, key: str, default: Any) -> tuple[bool, Any]:
        """(found, value): the key's value, or the default, or ConfigError if required."""
        value = self.get(key)
        if value is not None:
            return True, value
        if default is ...:
            raise ConfigError(f"{self.where}: required metadata key '{self.arch}.{key}' is "
                              f"missing")
        return False, default

    def int(self, key: str, default: Any = ..., maximum: int = MAX_POSITIONS) -> int:
        """A non-negative integer key (a uniform per-layer array counts as one value)."""
        found, value = self._present(key, default)
        if not found:
            return value
        name = f"{self.arch}.{key}"
        if isinstance(value, np.ndarray):  # per-layer values: accept only if uniform
            if value.ndim != 1 or value.size == 0 or (value != value.flat[0]).any():
                raise ConfigError(f"{self.where}: '{name}' varies per layer "
                                  f"({value.tolist()[:8]}...); per-layer sizes are not supported")
            value = value.flat[0]
        if not is_int(value) or int(value) < 0:
            raise ConfigError(f"{self.where}: '{name}' must be a non-negative integer, got "
                              f"{value!r}")
        return as_count(value, name, self.where, maximum=maximum)

    def float(self, key: str, default: Any = ..., *, positive: bool = False) -> float:
        """A finite number key (positive if asked); NaN and infinities are refused."""
        found, value = self._present(key, default)
        if not found:
            return value
        return as_float(value, f"{self.arch}.{key}", self.where, positive=positive)


def gguf_dims(meta: Metadata, file: Any, head_dim_default: int | None) -> dict[str, int]:
    """Sizes shared by every architecture; head_dim from key_length when given."""
    hidden = meta.int("embedding_length", maximum=MAX_WIDTH)
    heads = meta.int("attention.head_count", maximum=MAX_WIDTH)
    if heads == 0:
        raise ConfigError(f"{meta.where}: '{meta.arch}.attention.head_count' must be positive")
    head_dim = meta.int("attention.key_length", head_dim_default or hidden // heads,
                        maximum=MAX_WIDTH)
    value_dim = meta.int("attention.value_length", head_dim, maximum=MAX_WIDTH)
    if value_dim != head_dim:
        raise ConfigError(f"{meta.where}: key_length {head_dim} != value_length {value_dim}; "
                          f"different key and value head sizes are not supported")
    return dict(hidden_size=hidden, num_layers=meta.int("block_count", maximum=MAX_LAYERS),
                num_attention_heads=heads,
                num_kv_heads=meta.int("attention.head_count_kv", heads, maximum=MAX_WIDTH),
                head_dim=head_dim,
                intermediate_size=meta.int("feed_forward_length", maximum=MAX_WIDTH),
                vocab_size=_vocab_size(meta, file))


def _vocab_size(meta: Metadata, file: Any) -> int:
    """``{arch}.vocab_size``, else the token list's length, else the embedding's rows."""
    size = meta.int("vocab_size", 0, maximum=MAX_WIDTH)
    if size:
        return size
    tokens = file.metadata.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens):
        return len(tokens)
    embed = file.tensors.get("token_embd.weight")
    if embed is None:
        raise ConfigError(f"{meta.where}: cannot tell the vocabulary size (no vocab_size key, no "
                          f"token list, no token_embd.weight)")
    return embed.shape[0]


def scaled_rope(meta: Metadata, theta: float, max_pos: int) -> RopeConfig:
    """RoPE from ``rope.freq_base`` and the ``rope.scaling.*`` keys (never ignored)."""
    kind = meta.get("rope.scaling.type", "none")
    if not isinstance(kind, str):
        raise ConfigError(f"{meta.where}: '{meta.arch}.rope.scaling.type' must be a string, got "
                          f"{str(kind)[:60]}")
    factor = meta.float("rope.scaling.factor", 0.0) or meta.float("rope.scale_linear", 0.0)
    if kind == "none" and factor not in (0.0, 1.0):
        kind = "linear"  # old files: only rope.scale_linear
    if kind == "none" or (kind == "linear" and factor == 1.0):
        return RopeConfig(theta=theta)
    if kind == "linear":
        return RopeConfig(theta=theta, rope_type="linear", factor=factor)
    if kind == "yarn":
        original = meta.int("rope.scaling.original_context_length", max_pos)
        if original == 0:
            raise ConfigError(f"{meta.where}: '{meta.arch}.rope.scaling.original_context_length' "
                              f"must be positive")
        return RopeConfig(theta=theta, rope_type="yarn", factor=factor or max_pos / original,
                          original_max_position_embeddings=original,
                          attention_factor=meta.float("rope.scaling.attn_factor", None),
                          beta_fast=meta.float("rope.scaling.yarn_beta_fast", None),
                          beta_slow=meta.float("rope.scaling.yarn_beta_slow", None))
    raise ConfigError(f"{meta.where}: RoPE scaling type {kind!r} in GGUF metadata is not "
                      f"supported; supported: none, linear, yarn (and Llama-3 rope_freqs)")


def llama3_factors(theta: float, dim: int, factor: float, low: float, high: float,
                   original: int) -> np.ndarray:
    """llama.cpp's per-frequency divisors for Llama-3 RoPE scaling ([dim/2] float64)."""
    inv_freq = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    wavelen = 2 * math.pi / inv_freq
    smooth = (original / wavelen - low) / (high - low)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < original / high, 1.0,
                    np.where(wavelen > original / low, factor, mid))


def llama3_rope(meta: Metadata, file: Any, theta: float, dim: int) -> RopeConfig:
    """Recognise the Llama-3 settings behind a ``rope_freqs`` tensor, or refuse it."""
    info = file.tensors[ROPE_FREQS]
    if dim < 2 or info.type_name != "F32" or info.num_elements != dim // 2:
        raise ConfigError(f"{meta.where}: {ROPE_FREQS} is {info.type_name} {list(info.shape)}; "
                          f"expected F32 [{dim // 2}]")
    stored = file.raw(ROPE_FREQS).view(np.float32).astype(np.float64)
    factor = float(stored.max())
    for low, high, original in LLAMA3_ROPE_CANDIDATES:
        expected = llama3_factors(theta, dim, factor, low, high, original)
        if np.allclose(stored, expected, rtol=1e-5, atol=0):
            return RopeConfig(theta=theta, rope_type="llama3", factor=factor,
                              low_freq_factor=low, high_freq_factor=high,
                              original_max_position_embeddings=original)
    raise ConfigError(f"{meta.where}: {ROPE_FREQS} holds RoPE frequency factors that match no "
                      f"known Llama-3 scaling (factor {factor}); they cannot be expressed as a "
                      f"RoPE config, so the model cannot be loaded faithfully")


# Block tensors (llama.cpp name -> HF name) common to every family read from GGUF; each
# family adds its norms (``ffn_norm`` is the pre-MLP norm everywhere, named differently).
GGUF_BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
