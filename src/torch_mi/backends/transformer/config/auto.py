"""Auto-config for unknown decoder-only families, and the compatibility report.

Four tiers: required scalars from the config; optional scalars; layouts, biases and norms
inferred from tensor names; and ``model_type`` fix-ups (Gemma numerics).
For the seven known families the result equals the family translator's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ....errors import ConfigError
from ...registry import architecture_for, find_architecture
from .hf_keys import HFKeys, read_rope
from .translate import dims, layer_types, sliding_window
from .types import (
    FULL_ATTENTION,
    SLIDING_ATTENTION,
    Activation,
    MlpLayout,
    NormType,
    QkvLayout,
    TransformerConfig,
    activation_from_hf,
    gemma_embedding_scale,
)

REQUIRED_FIELDS = ("hidden_size", "num_attention_heads", "num_hidden_layers",
                   "intermediate_size", "vocab_size")
LAYER0 = "model.layers.0."

# (prefix, families) for checkpoints that do not use HF-LLaMA tensor names.
NAMING_CONVENTIONS = (
    ("transformer.h.", "GPT-2 / GPT-J / GPT-NeoX"),
    ("transformer.blocks.", "Falcon / MPT"),
    ("gpt_neox.layers.", "GPT-NeoX / Pythia"),
    ("transformer.layer.", "BLOOM"),
    ("transformer.word_embeddings", "BLOOM"),
)


def from_hf_config(hf: dict) -> TransformerConfig:
    """Translate a known family's config.json (strict); ConfigError for unknown types."""
    model_type = hf.get("model_type") if isinstance(hf, dict) else None
    if not model_type:
        raise ConfigError("config.json has no 'model_type'; it is needed to pick the family")
    return architecture_for(model_type).translate_hf(hf)


def _has(names: set[str], suffix: str) -> bool:
    return any(LAYER0 in n and n.endswith(suffix) for n in names)


def _auto_layer_types(keys: HFKeys, n: int, window: int | None, gemma_post: bool):
    if keys.has("layer_types"):
        return layer_types(keys, n, window)
    if window is None:
        return (FULL_ATTENTION,) * n
    if keys.has("max_window_layers"):  # Qwen2 convention
        first = keys.int("max_window_layers")
        return tuple(SLIDING_ATTENTION if i >= first else FULL_ATTENTION for i in range(n))
    if gemma_post:  # Gemma 2 convention: even layers slide
        return tuple(SLIDING_ATTENTION if i % 2 == 0 else FULL_ATTENTION for i in range(n))
    return (SLIDING_ATTENTION,) * n


def _auto_activation(keys: HFKeys, is_gemma: bool) -> Activation:
    name = keys.opt("hidden_activation") or keys.opt("hidden_act") or "silu"
    if is_gemma and name == "gelu":
        return Activation.GeluApprox  # HF's Gemma fix-up of a legacy value
    return activation_from_hf(name, keys.where)


def from_hf_config_auto(hf: dict, tensor_names: Iterable[str]) -> TransformerConfig:
    """Config for any LLaMA-like decoder: known types use their translator, others are
    inferred from config scalars and tensor names."""
    return auto_config(hf, tensor_names)[0]


def auto_config(hf: dict, tensor_names: Iterable[str]) -> tuple[TransformerConfig, list[str]]:
    """``from_hf_config_auto`` plus the config keys it did not read."""
    model_type = str(hf.get("model_type") or "unknown")
    known = find_architecture(model_type)
    if known is not None:
        return known.translate_hf(hf), []
    names = set(tensor_names)
    keys = HFKeys(hf, f"{model_type} config (auto)")
    is_gemma = "gemma" in model_type.lower()
    post_norms = _has(names, "post_feedforward_layernorm.weight") or _has(
        names, "pre_feedforward_layernorm.weight")
    d = dims(keys, head_dim_default=256 if is_gemma else None)
    window = sliding_window(keys)
    if keys.hf.get("use_sliding_window") is False:
        window = None
    keys.used.add("use_sliding_window")
    eps = keys.float("rms_norm_eps", None, positive=True)
    eps = eps if eps is not None else keys.float("norm_epsilon", None, positive=True)
    eps = eps if eps is not None else keys.float("layer_norm_eps", 1e-5, positive=True)
    tie = keys.opt("tie_word_embeddings")
    if tie is None:
        tie = "lm_head.weight" not in names
    max_pos = keys.int("max_position_embeddings", 4096)
    rope, partial = read_rope(keys, max_pos, 10_000.0)
    norm = NormType.LayerNorm if _has(names, "input_layernorm.bias") else NormType.RmsNorm
    mlp = (MlpLayout.GatedFused if _has(names, "mlp.gate_up_proj.weight")
           else MlpLayout.Plain if _has(names, "mlp.c_fc.weight") else MlpLayout.GatedSeparate)
    query_scalar = keys.float("query_pre_attn_scalar", 256.0 if is_gemma and post_norms else None,
                              positive=True)
    types = _auto_layer_types(keys, d["num_layers"], window, is_gemma and post_norms)
    config = TransformerConfig(
        model_type=model_type, **d,
        norm_type=NormType.GemmaRmsNorm if is_gemma else norm, norm_eps=eps,
        activation=_auto_activation(keys, is_gemma),
        qkv_layout=QkvLayout.Fused if _has(names, "self_attn.qkv_proj.weight") else QkvLayout.Separate,
        mlp_layout=mlp,
        qkv_bias=_has(names, "self_attn.q_proj.bias") or _has(names, "self_attn.qkv_proj.bias"),
        o_proj_bias=_has(names, "self_attn.o_proj.bias"),
        mlp_bias=any(_has(names, f"mlp.{m}.bias")
                     for m in ("down_proj", "c_fc", "gate_proj", "gate_up_proj")),
        embedding_scale=gemma_embedding_scale(d["hidden_size"]) if is_gemma else None,
        tie_word_embeddings=bool(tie), rope=rope, partial_rotary_factor=partial or 1.0,
        max_position_embeddings=max_pos,
        attn_logit_softcapping=keys.float("attn_logit_softcapping", None, positive=True),
        final_logit_softcapping=keys.float("final_logit_softcapping", None, positive=True),
        query_pre_attn_scalar=query_scalar, use_post_norms=post_norms,
        qk_norm=_has(names, "self_attn.q_norm.weight"),
        layer_types=types,
        sliding_window=window if SLIDING_ATTENTION in types else None,
    )
    return config, keys.leftover()


@dataclass
class CompatibilityReport:
    """Whether an unknown checkpoint fits the generic transformer, and why not."""

    compatible: bool = True
    issues: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, issue: str) -> None:
        self.issues.append(issue)
        self.compatible = False

    def into_result(self) -> None:
        """Raise ConfigError listing every issue if the checkpoint is not compatible."""
        if not self.compatible:
            raise ConfigError(str(self))

    def __str__(self) -> str:
        if self.compatible:
            head = "model is compatible with GenericTransformer"
        else:
            head = "model is not compatible with GenericTransformer:"
        lines = [head] + [f"  - {i}" for i in self.issues] + [f"  (note) {n}" for n in self.notes]
        return "\n".join(lines)


def check_config_fields(hf: dict) -> CompatibilityReport:
    """One issue per missing or invalid required scalar."""
    report = CompatibilityReport()
    for name in REQUIRED_FIELDS:
        value = hf.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            report.add(f"missing or invalid required field '{name}'")
    return report


def _hint(names: list[str], expected: str, keywords: tuple[str, ...], limit: int) -> str:
    import difflib

    # Compare layer-0 names with layer-0 names only: layer 1's correct name is no answer.
    pool = [n for n in names if LAYER0 in n] if LAYER0 in expected else names
    close = difflib.get_close_matches(expected, pool, n=1, cutoff=0.8)
    if close:
        return f"; did you mean '{close[0]}'?"
    found = [n for n in names if any(k in n.lower() for k in keywords)][:limit]
    return f"; found tensors like {found}" if found else ""


def _check_tensors(report: CompatibilityReport, names: list[str], tied: bool) -> bool:
    """Add an issue per missing expected tensor; return True if any tensor check failed."""
    present = set(names)
    checks = [
        (["model.embed_tokens.weight"], ("embed", "wte", "word_embeddings"), 3),
        ([LAYER0 + "input_layernorm.weight"], ("norm",), 4),
        ([LAYER0 + "post_attention_layernorm.weight", LAYER0 + "pre_feedforward_layernorm.weight"],
         ("norm",), 4),
        (["model.norm.weight"], ("ln_f", "final_layer_norm", "ln_out", "norm"), 2),
        ([LAYER0 + "self_attn.q_proj.weight", LAYER0 + "self_attn.qkv_proj.weight"], ("attn",), 4),
        ([LAYER0 + f"mlp.{m}.weight" for m in ("gate_proj", "gate_up_proj", "c_fc", "down_proj")],
         ("mlp", "ffn", "fc"), 4),
    ]
    failed = False
    for options, keywords, limit in checks:
        if not any(o in present for o in options):
            failed = True
            report.add(f"expected tensor '{options[0]}' not found"
                       + _hint(names, options[0], keywords, limit))
    if not tied and "lm_head.weight" not in present:
        report.add("'lm_head.weight' not found but tie_word_embeddings is false")
    return failed


def check_auto_compatibility(hf: dict, tensor_names: Iterable[str]) -> CompatibilityReport:
    """Config-field checks plus tensor-name checks with 'did you mean' hints and a diagnosis
    of foreign naming conventions (GPT-2, NeoX, Falcon, BLOOM)."""
    report = check_config_fields(hf)
    names = sorted(tensor_names)
    tied = hf.get("tie_word_embeddings")
    tied = ("lm_head.weight" not in names) if tied is None else bool(tied)
    if _check_tensors(report, names, tied):
        for prefix, family in NAMING_CONVENTIONS:
            if any(n.startswith(prefix) for n in names):
                report.add(
                    f"tensor names start with '{prefix}': this is the {family} naming convention; "
                    f"torch-mi's generic transformer needs HF-LLaMA names (model.layers.{{i}}...). "
                    f"Convert the checkpoint's names first"
                )
                break
        else:
            if not any(n.startswith("model.layers.") for n in names):
                report.add(f"unrecognized naming convention; first tensors: {names[:5]}")
    if report.compatible:
        try:
            cfg, leftover = auto_config(hf, names)
            report.notes.append(f"auto-config: {cfg.norm_type}, {cfg.mlp_layout}, "
                                f"{cfg.qkv_layout}, tied={cfg.tie_word_embeddings}")
            if leftover:
                report.notes.append(f"config keys not read by auto-config: {leftover}")
        except ConfigError as exc:
            report.add(str(exc))
    return report
