"""SAE configuration: architecture, normalisation and hook, parsed from the formats' configs.

Semantics follow sae-lens 6 (``SAE.encode``/``decode``), which is what SAELens users expect:
BatchTopK is a training-time architecture that sae-lens saves as JumpReLU, so it needs no
class of its own here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from torch_mi.errors import ConfigError
from torch_mi.hooks.points import HookPoint


class SaeArchitecture(str, Enum):
    """How pre-activations become feature activations."""

    RELU = "relu"            # sae-lens "standard"
    JUMPRELU = "jumprelu"    # relu(pre) * (pre > threshold); also saved BatchTopK
    TOPK = "topk"            # k largest pre-activations per row, then relu
    GATED = "gated"          # (x W_enc + b_gate > 0) * relu(x (W_enc * exp(r_mag)) + b_mag)


class NormalizeActivations(str, Enum):
    """sae-lens ``normalize_activations``; the two stateful kinds are applied at run time.

    ``expected_average_only_in`` and ``covariance_whitening`` are identities at inference in
    sae-lens (their factors are folded into the weights when known), so they are here too.
    """

    NONE = "none"
    EXPECTED_AVERAGE_ONLY_IN = "expected_average_only_in"
    CONSTANT_NORM_RESCALE = "constant_norm_rescale"   # x * sqrt(d_in) / |x|, undone on output
    LAYER_NORM = "layer_norm"                         # (x - mu) / (std + 1e-5), undone on output
    COVARIANCE_WHITENING = "covariance_whitening"

    @property
    def stateful(self) -> bool:
        """Whether decode needs statistics of the input that was encoded."""
        return self in (NormalizeActivations.CONSTANT_NORM_RESCALE, NormalizeActivations.LAYER_NORM)


class TopKStrategy(str, Enum):
    """TopK selection: ``CPU`` keeps exactly k (ties broken by index, like ``torch.topk``),
    ``GPU`` keeps every value >= the k-th (ties may keep more); ``AUTO`` picks by device."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


_ARCH_NAMES = {
    "standard": SaeArchitecture.RELU, "relu": SaeArchitecture.RELU,
    "jumprelu": SaeArchitecture.JUMPRELU, "topk": SaeArchitecture.TOPK,
    "batchtopk": SaeArchitecture.JUMPRELU, "gated": SaeArchitecture.GATED,
}
_TRANSCODER_ARCHS = ("transcoder", "skip_transcoder", "jumprelu_transcoder")


@dataclass(frozen=True)
class SaeConfig:
    """What an SAE computes and where it reads: sizes, architecture, hook, pre-processing."""

    d_in: int
    d_sae: int
    architecture: SaeArchitecture = SaeArchitecture.RELU
    k: int | None = None
    hook_name: str = "unknown"
    hook_head_index: int | None = None
    apply_b_dec_to_input: bool = False
    normalize_activations: NormalizeActivations = NormalizeActivations.NONE
    rescale_acts_by_decoder_norm: bool = False
    reshape_hook_z: bool = False
    model_name: str = "unknown"
    dtype: str = "float32"
    format: str = "saelens"

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"SAE config {name} must be a positive int, got {value!r}.")
        bad_k = not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 0
        if self.architecture is SaeArchitecture.TOPK and bad_k:
            raise ConfigError(
                f"a TopK SAE needs a non-negative int k (cfg.json 'k' or "
                f"'activation_fn_kwargs.k'), got {self.k!r}."
            )

    @property
    def hook_point(self) -> HookPoint:
        """The model hook the SAE reads (TransformerLens string; unknown strings -> Custom)."""
        return HookPoint.parse(self.hook_name)

    @classmethod
    def from_saelens_dict(cls, cfg: dict[str, Any], where: str = "cfg.json") -> SaeConfig:
        """Parse a SAELens ``cfg.json`` (sae-lens 6 layout, or the pre-6 flat layout)."""
        if not isinstance(cfg, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(cfg).__name__}.")
        meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
        for key in ("d_in", "d_sae"):
            if key not in cfg:
                raise ConfigError(f"{where}: missing required key {key!r}; is this a SAELens "
                                  f"cfg.json?")
        arch, k = _architecture(cfg, where)
        hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point") or "unknown"
        head = meta.get("hook_head_index", cfg.get("hook_head_index", cfg.get("hook_point_head_index")))
        reshape = cfg.get("reshape_activations")
        if reshape is None:  # pre-6 configs: sae-lens infers it from the hook name
            reshape = "hook_z" if "hook_z" in str(hook) else "none"
        if reshape not in ("none", "hook_z"):
            raise ConfigError(f"{where}: reshape_activations {reshape!r} is not 'none'/'hook_z'.")
        return cls(
            d_in=cfg["d_in"], d_sae=cfg["d_sae"], architecture=arch, k=k, hook_name=str(hook),
            hook_head_index=head,
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),  # sae-lens default
            normalize_activations=_normalisation(cfg.get("normalize_activations"), where),
            rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
            reshape_hook_z=reshape == "hook_z",
            model_name=str(meta.get("model_name") or cfg.get("model_name") or "unknown"),
            dtype=str(cfg.get("dtype", "float32")),
        )


def _architecture(cfg: dict[str, Any], where: str) -> tuple[SaeArchitecture, int | None]:
    """Architecture and k from ``architecture`` (sae-lens 6) or ``activation_fn_str`` (older)."""
    name = cfg.get("architecture")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    if name in _TRANSCODER_ARCHS:
        raise ConfigError(f"{where}: architecture {name!r} is a transcoder; load it with "
                          f"torch_mi.dictionaries' transcoder classes, not SparseAutoencoder.")
    if name in (None, "standard"):
        act = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu")) or "relu"
        if act == "topk":
            return SaeArchitecture.TOPK, k
        if act not in _ARCH_NAMES:
            raise ConfigError(f"{where}: unknown activation function {act!r}; supported: relu, "
                              f"jumprelu, topk.")
        return _ARCH_NAMES[act], k
    if name not in _ARCH_NAMES:
        known = ", ".join(sorted(_ARCH_NAMES))
        raise ConfigError(f"{where}: unknown SAE architecture {name!r}; supported: {known}.")
    return _ARCH_NAMES[name], k


def _normalisation(value: object, where: str) -> NormalizeActivations:
    if value is None or value is False:
        return NormalizeActivations.NONE
    if value is True:  # pre-6 boolean flag
        return NormalizeActivations.EXPECTED_AVERAGE_ONLY_IN
    try:
        return NormalizeActivations(value)
    except ValueError:
        known = ", ".join(n.value for n in NormalizeActivations)
        raise ConfigError(f"{where}: unknown normalize_activations {value!r}; supported: "
                          f"{known}.") from None
