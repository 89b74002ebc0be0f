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
    if name not in ACTIVATIONS_BY_HF_NAME:
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
        if self.theta <= 0:
            raise ConfigError(f"rope theta must be positive, got {self.theta}")


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
        if not self.layer_types:
            object.__setattr__(self, "layer_types", (FULL_ATTENTION,) * self.num_layers)
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        self._validate()

    def _validate(self) -> None:
        where = f"{self.model_type} config"
        for name in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads",
                     "head_dim", "intermediate_size", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}: '{name}' must be a positive integer, got {value!r}")
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
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise ConfigError(f"{where}: unsupported layer types {unknown}; supported {LAYER_TYPES}")
        if SLIDING_ATTENTION in self.layer_types and not self.sliding_window:
            raise ConfigError(f"{where}: sliding layers need a positive 'sliding_window'")
        if not 0.0 < self.partial_rotary_factor <= 1.0:
            raise ConfigError(f"{where}: partial_rotary_factor must be in (0, 1]")
        if self.rotary_dim % 2:
            raise ConfigError(f"{where}: the rotary dimension ({self.rotary_dim}) must be even")

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
