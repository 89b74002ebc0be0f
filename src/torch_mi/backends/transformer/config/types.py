"""TransformerConfig: every architectural axis of the generic decoder, as data.

The generic model reads this config once, in ``__init__``; a model family is nothing but a
translator from its HF ``config.json`` (or GGUF metadata) to this dataclass plus a
weight-name map.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum

from ....errors import ConfigError
from ...registry import architecture_for, resolve_hf
from .checks import (
    MAX_LAYERS,
    MAX_POSITIONS,
    MAX_WIDTH,
    as_count,
    as_float,
    float_list,
    is_int,
    is_real,
    optional_float,
)

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
LAYER_TYPES = (FULL_ATTENTION, SLIDING_ATTENTION)


class NormType(Enum):
    """Normalisation layer and its numerics."""

    RmsNorm = "rms_norm"  # x / rms(x) * w, weight applied after the cast back (Llama order)
    LayerNorm = "layer_norm"  # mean/variance with weight and bias (StarCoder2)
    GemmaRmsNorm = "gemma_rms_norm"  # computed in fp32 with (1 + w), cast back last (Gemma)

    def __str__(self) -> str:
        return self.value


class Activation(Enum):
    """MLP activation function."""

    Silu = "silu"
    Gelu = "gelu"  # exact erf GELU
    GeluApprox = "gelu_pytorch_tanh"  # tanh approximation

    def __str__(self) -> str:
        return self.value


class QkvLayout(Enum):
    """How the checkpoint stores the Q/K/V projections."""

    Separate = "separate"
    Fused = "fused"  # one qkv_proj, rows [Q | K | V] (Phi-3)

    def __str__(self) -> str:
        return self.value


class MlpLayout(Enum):
    """How the checkpoint stores the MLP."""

    GatedSeparate = "gated_separate"  # gate_proj, up_proj, down_proj
    GatedFused = "gated_fused"  # gate_up_proj rows [gate | up], down_proj (Phi-3)
    Plain = "plain"  # c_fc, act, c_proj (StarCoder2)

    def __str__(self) -> str:
        return self.value


ACTIVATIONS_BY_HF_NAME: dict[str, Activation] = {
    "silu": Activation.Silu,
    "swish": Activation.Silu,
    "gelu": Activation.Gelu,
    "gelu_pytorch_tanh": Activation.GeluApprox,
    "gelu_new": Activation.GeluApprox,
    "gelu_fast": Activation.GeluApprox,
}


def activation_from_hf(name: object, where: str) -> Activation:
    if not isinstance(name, str) or name not in ACTIVATIONS_BY_HF_NAME:
        raise ConfigError(
            f"{where}: activation {name!r} is not supported; supported: "
            f"{sorted(ACTIVATIONS_BY_HF_NAME)}"
        )
    return ACTIVATIONS_BY_HF_NAME[name]  # type: ignore[index]


ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding: base and scaling, with HF's parameter names."""

    theta: float = 10_000.0
    rope_type: str = "default"
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    low_freq_factor: float | None = None  # llama3
    high_freq_factor: float | None = None  # llama3
    attention_factor: float | None = None  # yarn, longrope
    beta_fast: float | None = None  # yarn
    beta_slow: float | None = None  # yarn
    mscale: float | None = None  # yarn
    mscale_all_dim: float | None = None  # yarn
    truncate: bool = True  # yarn
    short_factor: tuple[float, ...] | None = None  # longrope
    long_factor: tuple[float, ...] | None = None  # longrope

    def __post_init__(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise ConfigError(
                f"RoPE scaling type {self.rope_type!r} is not supported; supported types: "
                f"{', '.join(ROPE_TYPES)}. Remove or change 'rope_scaling'/'rope_parameters'."
            )
        where = f"RoPE config ({self.rope_type})"
        as_float(self.theta, "rope_theta", where, positive=True)
        for name in ("factor", "low_freq_factor", "high_freq_factor", "attention_factor",
                     "beta_fast", "beta_slow"):
            optional_float(getattr(self, name), name, where, positive=True)
        for name in ("mscale", "mscale_all_dim"):
            value = getattr(self, name)
            if value is not None:
                as_float(value, name, where, non_negative=True)
        if self.original_max_position_embeddings is not None:
            as_count(self.original_max_position_embeddings, "original_max_position_embeddings",
                     where, minimum=1, maximum=MAX_POSITIONS)
        if not isinstance(self.truncate, bool):
            raise ConfigError(f"{where}: 'truncate' must be true/false, got {self.truncate!r}")
        for name in ("short_factor", "long_factor"):
            float_list(getattr(self, name), name, where)
        self._check_type_needs(where)

    def _check_type_needs(self, where: str) -> None:
        """What each scaling type's formula needs (HF's rope validation, plus the inputs
        that would divide by zero or take the log of zero)."""
        kind = self.rope_type
        if kind != "default" and self.factor is None:
            raise ConfigError(f"{where}: RoPE type {kind!r} needs a 'factor'")
        if kind in ("llama3", "yarn", "longrope") and self.original_max_position_embeddings is None:
            raise ConfigError(f"{where}: RoPE type {kind!r} needs "
                              f"'original_max_position_embeddings'")
        if kind == "llama3" and not (self.low_freq_factor is not None
                                     and self.high_freq_factor is not None
                                     and self.low_freq_factor < self.high_freq_factor):
            raise ConfigError(f"{where}: llama3 RoPE needs low_freq_factor < high_freq_factor, "
                              f"got {self.low_freq_factor!r} and {self.high_freq_factor!r}")
        if kind == "yarn" and self.theta == 1.0:
            raise ConfigError(f"{where}: yarn RoPE divides by log(rope_theta); rope_theta must "
                              f"not be 1")
        if kind == "longrope":
            if self.short_factor is None or self.long_factor is None:
                raise ConfigError(f"{where}: longrope needs 'short_factor' and 'long_factor'")
            if self.factor > 1.0 and self.original_max_position_embeddings < 2:
                raise ConfigError(f"{where}: longrope divides by log(original_max_position_"
                                  f"embeddings); it must be at least 2")


@dataclass(frozen=True)
class TransformerConfig:
    """All axes of the generic decoder-only transformer (see the module docstring)."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    norm_type: NormType = NormType.RmsNorm
    norm_eps: float = 1e-5
    activation: Activation = Activation.Silu
    qkv_layout: QkvLayout = QkvLayout.Separate
    mlp_layout: MlpLayout = MlpLayout.GatedSeparate
    qkv_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    embedding_scale: float | None = None
    tie_word_embeddings: bool = False
    rope: RopeConfig = field(default_factory=RopeConfig)
    rope_local: RopeConfig | None = None  # RoPE of sliding layers when it differs (Gemma 3)
    partial_rotary_factor: float = 1.0
    max_position_embeddings: int = 4096
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    query_pre_attn_scalar: float | None = None
    use_post_norms: bool = False
    qk_norm: bool = False
    layer_types: tuple[str, ...] = ()
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        self._validate_sizes()
        if not self.layer_types:
            object.__setattr__(self, "layer_types", (FULL_ATTENTION,) * self.num_layers)
        elif not isinstance(self.layer_types, (list, tuple)):
            raise ConfigError(f"{self.model_type} config: layer_types must be a list, got "
                              f"{self.layer_types!r}")
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        self._validate()
        self._validate_numbers()

    def _validate_sizes(self) -> None:
        where = f"{self.model_type} config"
        if not isinstance(self.model_type, str):
            raise ConfigError(f"model_type must be a string, got {self.model_type!r}")
        for name in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads",
                     "head_dim", "intermediate_size", "vocab_size"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ConfigError(f"{where}: '{name}' must be a positive integer, got {value!r}")
            as_count(value, name, where, maximum=MAX_LAYERS if name == "num_layers" else MAX_WIDTH)

    def _validate(self) -> None:
        where = f"{self.model_type} config"
        if self.num_attention_heads % self.num_kv_heads:
            raise ConfigError(
                f"{where}: num_attention_heads ({self.num_attention_heads}) must be a multiple "
                f"of num_key_value_heads ({self.num_kv_heads})"
            )
        if len(self.layer_types) != self.num_layers:
            raise ConfigError(
                f"{where}: layer_types has {len(self.layer_types)} entries but the model has "
                f"{self.num_layers} layers"
            )
        unknown = sorted({repr(t) for t in self.layer_types if t not in LAYER_TYPES})
        if unknown:
            raise ConfigError(f"{where}: unsupported layer types {unknown}; supported {LAYER_TYPES}")
        if SLIDING_ATTENTION in self.layer_types and self.sliding_window is None:
            raise ConfigError(f"{where}: sliding layers need a positive 'sliding_window'")
        if not is_real(self.partial_rotary_factor) or not 0.0 < self.partial_rotary_factor <= 1.0:
            raise ConfigError(f"{where}: partial_rotary_factor must be in (0, 1]")
        if self.rotary_dim % 2:
            raise ConfigError(f"{where}: the rotary dimension ({self.rotary_dim}) must be even")

    def _validate_numbers(self) -> None:
        """Every float finite and in range, every flag a bool, every enum an enum member."""
        where = f"{self.model_type} config"
        as_float(self.norm_eps, "norm_eps", where, positive=True)
        for name in ("embedding_scale", "attn_logit_softcapping", "final_logit_softcapping",
                     "query_pre_attn_scalar"):
            optional_float(getattr(self, name), name, where, positive=True)
        as_count(self.max_position_embeddings, "max_position_embeddings", where, minimum=1,
                 maximum=MAX_POSITIONS)
        if self.sliding_window is not None:
            as_count(self.sliding_window, "sliding_window", where, minimum=1,
                     maximum=MAX_POSITIONS)
        for name in ("qkv_bias", "o_proj_bias", "mlp_bias", "tie_word_embeddings",
                     "use_post_norms", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}: '{name}' must be true/false, got "
                                  f"{getattr(self, name)!r}")
        for name, kind in (("norm_type", NormType), ("activation", Activation),
                           ("qkv_layout", QkvLayout), ("mlp_layout", MlpLayout)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{where}: '{name}' must be a {kind.__name__}")
        for rope in (self.rope, self.rope_local):
            if rope is not None:
                self._check_rope_fits(rope, where)

    def _check_rope_fits(self, rope: RopeConfig, where: str) -> None:
        """RoPE settings that depend on the rotary dimension."""
        if not isinstance(rope, RopeConfig):
            raise ConfigError(f"{where}: rope must be a RopeConfig, got {rope!r}")
        half = self.rotary_dim // 2
        for name in ("short_factor", "long_factor"):
            factors = getattr(rope, name)
            if factors is not None and len(factors) != half:
                raise ConfigError(f"{where}: longrope '{name}' has {len(factors)} entries; the "
                                  f"rotary dimension {self.rotary_dim} needs {half}")
        if rope.rope_type == "dynamic" and self.rotary_dim <= 2:
            raise ConfigError(f"{where}: dynamic RoPE needs a rotary dimension above 2, got "
                              f"{self.rotary_dim}")

    # ---- derived values ---------------------------------------------------------------------
    @property
    def rope_theta(self) -> float:
        return self.rope.theta

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def attention_scale(self) -> float:
        if self.query_pre_attn_scalar is not None:
            return self.query_pre_attn_scalar**-0.5
        return self.head_dim**-0.5

    @property
    def num_kv_groups(self) -> int:
        return self.num_attention_heads // self.num_kv_heads

    @property
    def alternating_sliding_window(self) -> bool:
        """True when even layers slide and odd layers are global (Gemma 2)."""
        expected = tuple(
            SLIDING_ATTENTION if i % 2 == 0 else FULL_ATTENTION for i in range(self.num_layers)
        )
        return self.num_layers > 1 and self.layer_types == expected

    def is_sliding(self, layer: int) -> bool:
        return self.layer_types[layer] == SLIDING_ATTENTION

    @classmethod
    def from_hf_config(cls, hf: dict) -> TransformerConfig:
        """Translate a known family's HF ``config.json`` dict (strict key accounting)."""
        model_type = hf.get("model_type") if isinstance(hf, dict) else None
        return _transformer_config(architecture_for(model_type).translate_hf(hf))

    @classmethod
    def from_hf_config_auto(cls, hf: dict, tensor_names) -> TransformerConfig:
        """Known families as ``from_hf_config``; others inferred by auto-config."""
        return _transformer_config(resolve_hf(hf, list(tensor_names))[1])

    def replace(self, **changes: object) -> TransformerConfig:
        return dataclasses.replace(self, **changes)

    def num_parameters(self) -> int:
        """Parameter count implied by the config (tied unembedding counted once)."""
        d, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        norm = d * (2 if self.norm_type is NormType.LayerNorm else 1)
        attn = d * (q + 2 * kv) + q * d
        attn += (q + 2 * kv) * self.qkv_bias + d * self.o_proj_bias
        gated = self.mlp_layout is not MlpLayout.Plain
        mlp = d * i * (3 if gated else 2) + (i * (2 if gated else 1) + d) * self.mlp_bias
        norms = norm * (4 if self.use_post_norms else 2)
        if self.qk_norm:
            norms += 2 * self.head_dim
        per_layer = attn + mlp + norms
        head = 0 if self.tie_word_embeddings else v * d
        return v * d + self.num_layers * per_layer + norm + head


def _transformer_config(config: object) -> TransformerConfig:
    if not isinstance(config, TransformerConfig):
        raise ConfigError(f"this model_type is not a transformer family (it translates to "
                          f"{type(config).__name__})")
    return config


def gemma_embedding_scale(hidden_size: int) -> float:
    """Gemma multiplies embeddings by sqrt(hidden_size)."""
    return math.sqrt(hidden_size)
