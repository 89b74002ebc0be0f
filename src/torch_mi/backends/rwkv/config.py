"""RwkvConfig and the HF ``config.json`` translation for ``model_type`` rwkv6 and rwkv7.

Defaults and LoRA-dimension rules follow the upstream inventory (§5.1):

* RWKV-6 (``RWKV/v6-Finch-*-HF``): HF stores the head *size* under ``head_size`` (and, in
  the upstream reading, under ``num_attention_heads``); ``intermediate_size`` defaults to
  ``floor(D*3.5/32)*32``; the ddlerp / decay LoRA widths are 32 / 64, doubled for
  ``hidden_size == 4096`` (the 7B/14B rule of BlinkDL's and HF's RWKV-6 code; upstream
  hard-coded 32 / 64, which cannot load those checkpoints).
* RWKV-7 (fla-hub / ``RWKV/RWKV7-Goose-*-HF``): ``head_dim`` (default 64), LoRA widths from
  the config or fla's rule ``max(32, round(scale*sqrt(D)*factor/32)*32)``.

Every key is consumed, known to be irrelevant, or a ConfigError (as for the transformer
families): a key that may change the forward pass is never dropped silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from ...errors import ConfigError
from ..transformer.config.checks import MAX_LAYERS
from ..transformer.config.hf_keys import HFKeys


class RwkvVersion(Enum):
    V6 = "RWKV-6 (Finch)"
    V7 = "RWKV-7 (Goose)"


@dataclass(frozen=True)
class RwkvLoraDims:
    """Low-rank widths. V6: ``time_mix_extra_dim`` (ddlerp, per component) and
    ``time_decay_extra_dim``; V7: ``decay``, ``a``, ``v``, ``gate``."""

    time_mix_extra_dim: int | None = None
    time_decay_extra_dim: int | None = None
    decay: int | None = None
    a: int | None = None
    v: int | None = None
    gate: int | None = None


@dataclass(frozen=True)
class RwkvConfig:
    """Everything the RWKV forward pass depends on."""

    version: RwkvVersion
    hidden_size: int
    num_layers: int
    head_dim: int
    vocab_size: int
    intermediate_size: int
    lora_dims: RwkvLoraDims
    norm_eps: float = 1e-5
    rescale_every: int | None = None  # V6: parsed, never applied (equivalent up to eps)
    head_size_divisor: int | None = None  # V6 only
    hidden_ratio: float | None = None  # V7 only
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "head_dim", "vocab_size", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"RwkvConfig: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.head_dim:
            raise ConfigError(f"RwkvConfig: hidden_size {self.hidden_size} is not a multiple of "
                              f"the head size {self.head_dim}")
        if not (isinstance(self.norm_eps, float) and math.isfinite(self.norm_eps)
                and self.norm_eps > 0):
            raise ConfigError(f"RwkvConfig: norm_eps must be a positive float, got "
                              f"{self.norm_eps!r}")

    @property
    def model_type(self) -> str:
        return "rwkv6" if self.version is RwkvVersion.V6 else "rwkv7"

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.head_dim

    def group_norm_eps(self) -> float:
        """eps of the per-head GroupNorm: V6 ``norm_eps*head_size_divisor**2`` (6.4e-4),
        V7 ``head_dim*norm_eps`` (64e-5 at head size 64)."""
        if self.version is RwkvVersion.V7:
            return self.head_dim * self.norm_eps
        divisor = self.head_size_divisor
        return self.norm_eps * divisor * divisor if divisor else self.norm_eps

    def num_parameters(self) -> int:
        """Parameter count the config implies (the loader's preflight compares it)."""
        d, i, n, lo = self.hidden_size, self.intermediate_size, self.num_layers, self.lora_dims
        shared = self.vocab_size * d * (1 if self.tie_word_embeddings else 2) + 4 * d
        if self.version is RwkvVersion.V6:
            m, w = lo.time_mix_extra_dim, lo.time_decay_extra_dim
            attn = 10 * d + 10 * m * d + 2 * w * d + 5 * d * d  # maa, loras, decay, u, ln_x
            ffn = 2 * d + 2 * d * i + d * d
            return shared + n * (4 * d + attn + ffn)
        loras = 2 * d * lo.decay + d + 2 * d * lo.a + d + 2 * d * lo.gate
        attn = 11 * d + 4 * d * d + loras  # mixes, k_k, k_a, r_k, g_norm; projections
        ffn = d + 2 * d * i
        return shared + n * (4 * d + attn + ffn) + max(n - 1, 0) * (2 * d * lo.v + d)


# Keys of HF RWKV configs that never change the inference forward pass.
_IGNORED = ("context_length", "max_position_embeddings", "use_l2warp", "fuse_cross_entropy",
            "fuse_linear_cross_entropy", "fuse_swiglu", "fuse_norm", "attn_mode")


def _dims(keys: HFKeys) -> tuple[int, int, int]:
    hidden = keys.int("hidden_size")
    layers = keys.int("num_hidden_layers", maximum=MAX_LAYERS)
    vocab = keys.int("vocab_size")
    for name, value in (("hidden_size", hidden), ("num_hidden_layers", layers),
                        ("vocab_size", vocab)):
        if value == 0:
            raise ConfigError(f"{keys.where}: '{name}' must be positive, got 0")
    for key in _IGNORED:
        keys.opt(key)
    return hidden, layers, vocab


def _positive(keys: HFKeys, key: str, value: int) -> int:
    if value <= 0:
        raise ConfigError(f"{keys.where}: '{key}' must be positive, got {value}")
    return value


def _v6_head_size(keys: HFKeys, hidden: int) -> int:
    """HF RWKV-6 configs give the head size as ``head_size``; upstream read it from
    ``num_attention_heads`` (which holds the same number in the Finch configs). When both are
    present, ``num_attention_heads`` must be the head size or the head count."""
    heads_key = keys.int("num_attention_heads", None)
    if keys.has("head_size"):
        size = _positive(keys, "head_size", keys.int("head_size"))
        if heads_key is not None and heads_key not in (size, hidden // size):
            raise ConfigError(f"{keys.where}: num_attention_heads {heads_key} is neither the "
                              f"head size {size} nor the head count {hidden // size}")
        return size
    if heads_key is None:
        raise ConfigError(f"{keys.where}: RWKV-6 needs 'head_size' (or 'num_attention_heads', "
                          f"which HF RWKV-6 configs use for the head size)")
    return _positive(keys, "num_attention_heads", heads_key)


def translate_rwkv6(hf: dict) -> RwkvConfig:
    """``model_type: rwkv6`` (``RWKV/v6-Finch-*-HF``)."""
    keys = HFKeys(hf, "rwkv6 config")
    hidden, layers, vocab = _dims(keys)
    head = _v6_head_size(keys, hidden)
    attention = keys.int("attention_hidden_size", hidden)
    if attention != hidden:
        raise ConfigError(f"{keys.where}: attention_hidden_size {attention} != hidden_size "
                          f"{hidden} is not supported (Finch checkpoints use equal sizes)")
    inter = keys.int("intermediate_size", None)
    inter = inter if inter else (hidden * 7 // 2) // 32 * 32
    doubled = 2 if hidden == 4096 else 1
    config = RwkvConfig(
        version=RwkvVersion.V6, hidden_size=hidden, num_layers=layers, head_dim=head,
        vocab_size=vocab, intermediate_size=inter,
        lora_dims=RwkvLoraDims(time_mix_extra_dim=32 * doubled,
                               time_decay_extra_dim=64 * doubled),
        norm_eps=keys.float("layer_norm_epsilon", 1e-5, positive=True),
        rescale_every=keys.int("rescale_every", None) or 6,
        head_size_divisor=keys.int("head_size_divisor", None) or 8,
        tie_word_embeddings=keys.bool("tie_word_embeddings", False))
    keys.finish()
    return config


def fla_lora_dim(scale: float, hidden: int, factor: float) -> int:
    """fla's default low-rank width: ``max(32, round(scale*sqrt(D)*factor/32)*32)``."""
    return max(32, round(scale * math.sqrt(hidden) * factor / 32) * 32)


def _v7_checks(keys: HFKeys, hidden: int, head: int) -> None:
    """Keys that must hold their default for the forward pass we implement."""
    heads = keys.int("num_heads", None)
    if heads is not None and heads * head != hidden:
        raise ConfigError(f"{keys.where}: num_heads {heads} x head_dim {head} != hidden_size "
                          f"{hidden}")
    value_dim = keys.opt("value_dim")
    values = value_dim if isinstance(value_dim, list) else [value_dim]
    if any(v is not None and v != hidden for v in values):
        raise ConfigError(f"{keys.where}: value_dim {value_dim!r} != hidden_size {hidden} is "
                          f"not supported")
    keys.expect("hidden_act", ["sqrelu"], "RWKV-7's channel mix is relu(x)^2")
    keys.expect("norm_bias", [True], "the norms need their biases")
    keys.expect("norm_first", [True], "pre-norm blocks only")
    keys.expect("attn", [None], "hybrid attention layers are not supported")


def translate_rwkv7(hf: dict) -> RwkvConfig:
    """``model_type: rwkv7`` (fla-hub, ``RWKV/RWKV7-Goose-*-HF``)."""
    keys = HFKeys(hf, "rwkv7 config")
    hidden, layers, vocab = _dims(keys)
    head = _positive(keys, "head_dim", keys.int("head_dim", 64))
    _v7_checks(keys, hidden, head)
    ratio = keys.float("hidden_ratio", 4.0, positive=True)
    inter = keys.int("intermediate_size", None)
    inter = inter if inter else 32 * ((int(hidden * ratio) + 31) // 32)
    factor = head / 64

    def lora(key: str, scale: float, fac: float) -> int:
        given = keys.int(key, None)
        return _positive(keys, key, given) if given is not None else fla_lora_dim(
            scale, hidden, fac)

    dims = RwkvLoraDims(decay=lora("decay_low_rank_dim", 2.5, factor),
                        a=lora("a_low_rank_dim", 2.5, factor),
                        v=lora("v_low_rank_dim", 1.7, factor),
                        gate=lora("gate_low_rank_dim", 5.0, 1.0))
    config = RwkvConfig(
        version=RwkvVersion.V7, hidden_size=hidden, num_layers=layers, head_dim=head,
        vocab_size=vocab, intermediate_size=inter, lora_dims=dims,
        norm_eps=keys.float("norm_eps", 1e-5, positive=True), hidden_ratio=ratio,
        tie_word_embeddings=keys.bool("tie_word_embeddings", False))
    keys.finish()
    return config
