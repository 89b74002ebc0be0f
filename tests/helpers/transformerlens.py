"""TransformerLens 3.x ``HookedTransformer`` oracles for the tiny random HF models.

TL's ``convert_hf_model_config`` routes by the path string (a folder named ``gemma`` or
``llama`` is misrouted) and has no generic Gemma branch, so the ``HookedTransformerConfig``
is built here from the HF config. Weights go through TL's own converters and are loaded
raw: no LayerNorm folding, no centring, no value-bias folding, fp32 on CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tests.helpers.tiny_models import COMMON, SEQ_LEN, TinyModel, _perturb, byte_tokenizer

RAW_PROCESSING = dict(fold_ln=False, center_writing_weights=False, center_unembed=False,
                      fold_value_biases=False, refactor_factored_attn_matrices=False)

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "mistral": "MistralForCausalLM", "phi3": "Phi3ForCausalLM",
                 "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
                 "gemma3": "Gemma3ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
GEMMAS = ("gemma", "gemma2", "gemma3")


def _rope(hf_config: Any, layer_type: str = "full_attention") -> dict:
    """The RoPE parameters of ``layer_type`` layers (Gemma 3 keeps one dict per type)."""
    params = hf_config.rope_parameters
    return params if "rope_theta" in params else params[layer_type]


def _attn_types(hf_config: Any) -> list[str] | None:
    """TL's per-layer ``"local"``/``"global"`` list, or None when no layer slides."""
    window = getattr(hf_config, "sliding_window", None)
    if not window:
        return None
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is None:  # Mistral, Phi-3: every layer slides
        layer_types = ["sliding_attention"] * hf_config.num_hidden_layers
    kinds = ["local" if t == "sliding_attention" else "global" for t in layer_types]
    return kinds if "local" in kinds else None


def _gemma_extras(family: str, hf_config: Any) -> dict:
    extras: dict = dict(rotary_base=_rope(hf_config)["rope_theta"])
    if family == "gemma":
        return extras
    extras.update(use_normalization_before_and_after=True,
                  attn_scale=hf_config.query_pre_attn_scalar ** 0.5)
    if hf_config.attn_logit_softcapping:
        extras["attn_scores_soft_cap"] = hf_config.attn_logit_softcapping
    if hf_config.final_logit_softcapping:
        extras["output_logits_soft_cap"] = hf_config.final_logit_softcapping
    if family == "gemma3":
        full, local = _rope(hf_config, "full_attention"), _rope(hf_config, "sliding_attention")
        assert full.get("rope_type", "default") in ("default", "linear")
        assert local.get("rope_type", "default") == "default"
        extras.update(use_qk_norm=True, rotary_base=full["rope_theta"],
                      rotary_base_local=local["rope_theta"],
                      rotary_scaling_factor=float(full.get("factor", 1.0)))
    return extras


def hooked_config(family: str, hf_config: Any, **flags: bool) -> Any:
    """A ``HookedTransformerConfig`` equal to ``hf_config`` (fp32, CPU), plus TL ``flags``."""
    from transformer_lens import HookedTransformerConfig

    c = hf_config
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    n_kv = c.num_key_value_heads
    kw: dict = dict(
        d_model=c.hidden_size, d_head=d_head, n_heads=c.num_attention_heads,
        n_key_value_heads=None if n_kv == c.num_attention_heads else n_kv,
        d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers,
        n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps, d_vocab=c.vocab_size,
        act_fn=getattr(c, "hidden_activation", None) or c.hidden_act,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=d_head,
        rotary_adjacent_pairs=False, rotary_base=_rope(c)["rope_theta"], gated_mlp=True,
        final_rms=True, original_architecture=ARCHITECTURES[family],
        dtype=torch.float32, device="cpu", default_prepend_bos=False)
    attn_types = _attn_types(c)
    if attn_types is not None:
        kw.update(use_local_attn=True, attn_types=attn_types, window_size=c.sliding_window)
    if family in GEMMAS:
        kw.update(_gemma_extras(family, c))
    else:
        assert _rope(c).get("rope_type", "default") == "default", "no TL recipe for this RoPE"
        kw.update(use_qk_norm=family == "qwen3")
    kw.update(flags)
    return HookedTransformerConfig(**kw)


def _converter(family: str) -> Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]]:
    from transformer_lens.pretrained import weight_conversions as wc

    if family in GEMMAS:
        return wc.convert_gemma_weights
    return {"llama": wc.convert_llama_weights, "qwen2": wc.convert_qwen2_weights,
            "mistral": wc.convert_mistral_weights, "phi3": wc.convert_phi3_weights,
            "qwen3": wc.convert_qwen3_weights}[family]


def hooked_transformer(family: str, hf_model: torch.nn.Module, **flags: bool) -> Any:
    """TL's ``HookedTransformer`` with ``hf_model``'s weights, raw (no folding), fp32, eval."""
    from transformer_lens import HookedTransformer

    cfg = hooked_config(family, hf_model.config, **flags)
    with warnings.catch_warnings():  # "HookedTransformer is deprecated" (TL 4 has the bridge)
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, move_to_device=False)
    with torch.no_grad():
        state_dict = _converter(family)(hf_model, cfg)
    model.load_and_process_state_dict(state_dict, **RAW_PROCESSING)
    return model.eval()


def build_tiny_mha(root: Path) -> TinyModel:
    """A tiny llama with as many KV heads as query heads: TL's ``use_attn_in`` (and our
    ``hook_attn_in``) exist only without grouped-query attention."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**{**COMMON, "num_key_value_heads": COMMON["num_attention_heads"]},
                         rms_norm_eps=1e-5, tie_word_embeddings=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    _perturb(model, "llama_mha")
    path = root / "llama_mha"
    model.save_pretrained(path)
    byte_tokenizer().save(str(path / "tokenizer.json"))
    ids = torch.randint(3, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(7))
    return TinyModel("llama_mha", "llama", path, model, ids)
