"""Strict reading of HF ``config.json`` dicts: every key is consumed, ignored on purpose, or
an error. An architecture-relevant key we do not understand must never be dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ....errors import ConfigError
from .checks import MAX_POSITIONS, as_count, as_float, float_list, optional_float
from .types import RopeConfig

# Keys that never change the forward pass of a causal LM at inference.
NON_ARCHITECTURAL_KEYS = frozenset({
    "_name_or_path", "_model_name_or_path", "architectures", "model_type",
    "transformers_version", "torch_dtype", "dtype", "bos_token_id", "eos_token_id",
    "pad_token_id", "sep_token_id", "unk_token_id", "mask_token_id", "cls_token_id",
    "decoder_start_token_id", "initializer_range", "use_cache", "return_dict",
    "output_attentions", "output_hidden_states", "torchscript", "tie_encoder_decoder",
    "is_decoder", "is_encoder_decoder", "add_cross_attention", "chunk_size_feed_forward",
    "attention_dropout", "hidden_dropout", "embd_pdrop", "resid_pdrop", "residual_dropout",
    "embedding_dropout", "attn_pdrop", "summary_dropout", "id2label", "label2id",
    "problem_type", "tokenizer_class", "prefix", "task_specific_params", "finetuning_task",
    "auto_map", "pretraining_tp", "generation_config", "_attn_implementation",
    "_attn_implementation_autoset", "use_return_dict", "cache_implementation", "max_length",
    "min_length", "do_sample", "temperature", "top_k", "top_p", "num_beams",
    "repetition_penalty", "bad_words_ids", "early_stopping", "num_return_sequences",
    "unsloth_fixed", "keys_to_ignore_at_inference", "_commit_hash", "quantization_config_loaded",
    "base_model_tp_plan", "base_model_pp_plan", "base_model_ep_plan", "tf_legacy_loss",
    "pruned_heads", "chunk_size", "typical_p", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "diversity_penalty", "length_penalty", "bad_word_ids",
    "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "num_beam_groups", "output_scores", "return_dict_in_generate", "cross_attention_hidden_size",
    "sliding_window_pattern_unused", "max_new_tokens", "use_flash_attn",
})

ROPE_DICT_KEYS = frozenset({
    "rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
    "low_freq_factor", "high_freq_factor", "attention_factor", "beta_fast", "beta_slow",
    "mscale", "mscale_all_dim", "truncate", "short_factor", "long_factor",
    "partial_rotary_factor",
})

_MISSING = object()


class HFKeys:
    """Reads a config dict key by key and reports whatever was left over."""

    def __init__(self, hf: dict[str, Any], where: str) -> None:
        if not isinstance(hf, dict):
            raise ConfigError(f"{where}: config must be a JSON object, got {type(hf).__name__}")
        self.hf = hf
        self.where = where
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.hf and self.hf[key] is not None

    def opt(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; ``default`` when absent or null."""
        self.used.add(key)
        value = self.hf.get(key, _MISSING)
        return default if value is _MISSING or value is None else value

    def int(self, key: str, default: Any = _MISSING, maximum: int = MAX_POSITIONS) -> int:
        """A required (or defaulted) non-negative integer, at most ``maximum``."""
        self.used.add(key)
        value = self.hf.get(key)
        if value is None:
            if default is _MISSING:
                raise ConfigError(
                    f"{self.where}: missing or invalid required field '{key}'; "
                    f"config.json must give it as a non-negative integer"
                )
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"{self.where}: field '{key}' must be a non-negative integer, got {value!r}"
            )
        return as_count(value, key, self.where, maximum=maximum)

    def float(self, key: str, default: Any = _MISSING, *, positive: bool = False) -> float | None:
        """A finite number (positive if asked); NaN and infinities are always refused."""
        self.used.add(key)
        value = self.hf.get(key)
        if value is None:
            if default is _MISSING:
                raise ConfigError(f"{self.where}: missing required numeric field '{key}'")
            return default
        return as_float(value, key, self.where, positive=positive)

    def bool(self, key: str, default: bool) -> bool:
        self.used.add(key)
        value = self.hf.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where}: field '{key}' must be true/false, got {value!r}")
        return value

    def expect(self, key: str, allowed: Iterable[Any], why: str) -> None:
        """Accept ``key`` only at one of the ``allowed`` values (absent counts as allowed)."""
        self.used.add(key)
        value = self.hf.get(key)
        if value is not None and value not in tuple(allowed):
            raise ConfigError(f"{self.where}: '{key}' = {value!r} is not supported ({why})")

    def finish(self) -> None:
        """Raise if any key was neither consumed nor known to be irrelevant."""
        left = self.leftover()
        if left:
            raise ConfigError(
                f"{self.where}: unexpected config keys {left}. They may change the architecture, "
                f"so torch-mi refuses to ignore them; if they are harmless for this model, "
                f"remove them from config.json (or report the model so support can be added)"
            )

    def leftover(self) -> list[str]:
        """Keys neither consumed nor known to be irrelevant (null values count as unset)."""
        return sorted(
            k for k, v in self.hf.items()
            if k not in self.used and k not in NON_ARCHITECTURAL_KEYS and v is not None
        )


def _rope_from_dict(params: dict[str, Any], theta: float, top_original: int | None,
                    max_pos: int, where: str) -> RopeConfig:
    """A RopeConfig from HF's RoPE dict; every number is checked under its own key name."""
    unknown = sorted(set(params) - ROPE_DICT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown RoPE parameters {unknown}")
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type == "su":  # Phi-3's old name for LongRoPE
        rope_type = "longrope"
    original = params.get("original_max_position_embeddings")
    if original is not None:
        original = as_count(original, "original_max_position_embeddings", where, minimum=1,
                            maximum=MAX_POSITIONS)
    if rope_type in ("llama3", "yarn", "longrope"):
        # HF gives a top-level original_max_position_embeddings priority (Phi-3).
        original = top_original if top_original is not None else (original or max_pos)
    factor = optional_float(params.get("factor"), "factor", where, positive=True)
    if rope_type in ("yarn", "longrope") and factor is None:
        factor = max_pos / original
    if rope_type in ("linear", "dynamic", "llama3") and factor is None:
        raise ConfigError(f"{where}: RoPE type {rope_type!r} needs a 'factor'")
    truncate = params.get("truncate", True)
    if not isinstance(truncate, bool):
        raise ConfigError(f"{where}: RoPE 'truncate' must be true/false, got {truncate!r}")

    def number(key: str) -> float | None:
        return optional_float(params.get(key), key, where)

    return RopeConfig(
        theta=as_float(params.get("rope_theta", theta), "rope_theta", where, positive=True),
        rope_type=rope_type,
        factor=factor,
        original_max_position_embeddings=original,
        low_freq_factor=number("low_freq_factor"),
        high_freq_factor=number("high_freq_factor"),
        attention_factor=number("attention_factor"),
        beta_fast=number("beta_fast"),
        beta_slow=number("beta_slow"),
        mscale=number("mscale"),
        mscale_all_dim=number("mscale_all_dim"),
        truncate=truncate,
        short_factor=float_list(params.get("short_factor"), "short_factor", where),
        long_factor=float_list(params.get("long_factor"), "long_factor", where),
    )


def _rope_params(keys: HFKeys, layer_type: str | None) -> tuple[dict[str, Any], str]:
    """(the RoPE dict for ``layer_type``, the key it came from)."""
    key = "rope_parameters" if keys.has("rope_parameters") else "rope_scaling"
    params = keys.opt("rope_parameters") or keys.opt("rope_scaling") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{keys.where}: '{key}' must be an object, got {params!r}")
    if layer_type is not None and layer_type in params:
        params, key = params[layer_type] or {}, f"{key}.{layer_type}"
    elif any(isinstance(v, dict) for v in params.values()):
        nested = sorted(k for k, v in params.items() if isinstance(v, dict))
        if layer_type is None and "full_attention" in params:
            params, key = params["full_attention"], f"{key}.full_attention"
        else:
            raise ConfigError(f"{keys.where}: per-layer-type RoPE parameters {nested} not understood")
    if not isinstance(params, dict):
        raise ConfigError(f"{keys.where}: '{key}' must be an object, got {params!r}")
    return params, key


def read_rope(keys: HFKeys, max_pos: int, default_theta: float,
              layer_type: str | None = None) -> tuple[RopeConfig, float | None]:
    """RoPE settings in either the new ``rope_parameters`` or the old ``rope_theta`` +
    ``rope_scaling`` form. Returns the config and any ``partial_rotary_factor`` found."""
    theta = keys.float("rope_theta", default_theta, positive=True)
    params, key = _rope_params(keys, layer_type)
    top_original = keys.opt("original_max_position_embeddings")
    if top_original is not None:
        top_original = as_count(top_original, "original_max_position_embeddings", keys.where,
                                minimum=1, maximum=MAX_POSITIONS)
    partial = params.get("partial_rotary_factor", keys.opt("partial_rotary_factor"))
    rope = _rope_from_dict(dict(params), theta, top_original, max_pos, f"{keys.where}: {key}")
    if partial is not None:
        partial = as_float(partial, "partial_rotary_factor", keys.where, positive=True)
    return rope, partial
