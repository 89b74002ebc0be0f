"""Tiny random HF models, one per family and quirk, built with ``transformers`` in the test run.

Every parameter is perturbed (norm weights != 1, biases != 0) so a missing (1 + w) or a
dropped bias cannot hide. Each variant switches its family's quirks on.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=256, max_position_embeddings=256,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
SEQ_LEN = 20  # longer than every sliding window below (8)


def _configs() -> dict:
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GemmaConfig,
        LlamaConfig,
        MistralConfig,
        Phi3Config,
        Qwen2Config,
        Qwen3Config,
        Starcoder2Config,
    )

    def llama(rope: dict, **extra):
        return LlamaConfig(**{**COMMON, **extra}, rms_norm_eps=1e-5, tie_word_embeddings=False,
                           rope_parameters=rope)

    return {
        "llama": llama({"rope_type": "default", "rope_theta": 10000.0}),
        # Llama-3.x RoPE scaling with every frequency band in play, plus both bias flags.
        "llama3": llama({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16},
                        attention_bias=True, mlp_bias=True),
        "llama_linear": llama({"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}),
        "llama_dynamic": llama({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
                               max_position_embeddings=12),
        "llama_yarn": llama({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                             "original_max_position_embeddings": 16}),
        "qwen2": Qwen2Config(**COMMON, rms_norm_eps=1e-6, tie_word_embeddings=False,
                             use_sliding_window=True, sliding_window=8, max_window_layers=1,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
        # MQA and head_dim (32) != hidden / heads (16).
        "gemma": GemmaConfig(**{**COMMON, "num_key_value_heads": 1}, head_dim=32,
                             hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6),
        "gemma2": Gemma2Config(**COMMON, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                               attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                               hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                               layer_types=["sliding_attention", "full_attention"]),
        "phi3": Phi3Config(**COMMON, rms_norm_eps=1e-5, tie_word_embeddings=False,
                           sliding_window=8, original_max_position_embeddings=256),
        # LongRoPE beyond the original context, with partial rotary (8 of 16 dims).
        "phi3_longrope": Phi3Config(**COMMON, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                    original_max_position_embeddings=16,
                                    rope_parameters={
                                        "rope_type": "longrope", "rope_theta": 10000.0,
                                        "partial_rotary_factor": 0.5,
                                        "short_factor": [1.0, 1.1, 1.3, 1.7],
                                        "long_factor": [1.0, 2.0, 4.0, 9.0]}),
        "starcoder2": Starcoder2Config(**COMMON, norm_epsilon=1e-5, use_bias=True,
                                       sliding_window=8, hidden_act="gelu_pytorch_tanh",
                                       tie_word_embeddings=True),
        "mistral": MistralConfig(**COMMON, rms_norm_eps=1e-5, sliding_window=8,
                                 tie_word_embeddings=False, head_dim=16),
        # QK-norm, two RoPE bases (global one linearly scaled), local/global layers.
        "gemma3": Gemma3TextConfig(**{**COMMON, "num_hidden_layers": 3}, head_dim=32,
                                   query_pre_attn_scalar=24, sliding_window=8, rms_norm_eps=1e-6,
                                   layer_types=["sliding_attention", "full_attention",
                                                "sliding_attention"],
                                   rope_parameters={
                                       "full_attention": {"rope_type": "linear", "factor": 2.0,
                                                          "rope_theta": 1e6},
                                       "sliding_attention": {"rope_type": "default",
                                                             "rope_theta": 1e4}}),
        "qwen3": Qwen3Config(**COMMON, head_dim=32, rms_norm_eps=1e-6, tie_word_embeddings=True,
                             use_sliding_window=True, sliding_window=8, max_window_layers=1,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    }


FAMILY_OF = {"llama3": "llama", "llama_linear": "llama", "llama_dynamic": "llama",
             "llama_yarn": "llama", "phi3_longrope": "phi3"}
SEED_FAMILIES = ("llama", "qwen2", "gemma", "gemma2", "phi3", "starcoder2", "mistral")
VARIANTS = ("llama", "llama3", "llama_linear", "llama_dynamic", "llama_yarn", "qwen2", "gemma",
            "gemma2", "phi3", "phi3_longrope", "starcoder2", "mistral", "gemma3", "qwen3")
NEW_FAMILIES = ("gemma3", "qwen3")


def _perturb(model: torch.nn.Module, variant: str) -> None:
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for _, p in model.named_parameters():
            scale = 0.02 if p.dim() > 1 else 0.1
            p.add_(torch.randn(p.shape, generator=g) * scale)
        if variant == "gemma2":
            # Make both soft-caps bite: big attention scores and big logits.
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(12.0)
                layer.self_attn.k_proj.weight.mul_(12.0)
            model.model.norm.weight.add_(40.0)


def byte_tokenizer():
    """A 256-id byte-level tokenizer that adds <s> (id 1) as BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    base = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = base[:], 0
    for b in range(256):
        if b not in base:
            base.append(b)
            chars.append(256 + extra)
            extra += 1
    byte_to_char = dict(zip(base, map(chr, chars), strict=True))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for b in range(3, 256):
        vocab[byte_to_char[b]] = b
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<pad>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


@dataclass
class TinyModel:
    variant: str
    family: str
    path: Path
    hf: torch.nn.Module  # HF model (eager attention, eval mode)
    input_ids: torch.Tensor  # [2, SEQ_LEN]

    def hf_copy(self) -> torch.nn.Module:
        return copy.deepcopy(self.hf)


def build_tiny(variant: str, root: Path) -> TinyModel:
    from transformers import AutoModelForCausalLM

    config = _configs()[variant]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    _perturb(model, variant)
    path = root / variant
    model.save_pretrained(path)
    byte_tokenizer().save(str(path / "tokenizer.json"))
    ids = torch.randint(3, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(7))
    return TinyModel(variant, FAMILY_OF.get(variant, variant), path, model, ids)


def hf_run(model: torch.nn.Module, ids: torch.Tensor, **kwargs):
    """HF forward with hidden states, attentions and the last decoder layer's output."""
    captured = {}

    def grab(_module, _inputs, output):
        captured["last"] = output[0] if isinstance(output, tuple) else output

    handle = model.model.layers[-1].register_forward_hook(grab)
    try:
        with torch.no_grad():
            out = model(ids, output_hidden_states=True, output_attentions=True, **kwargs)
    finally:
        handle.remove()
    out.last_layer_output = captured["last"]
    return out
