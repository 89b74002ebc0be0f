"""Checkpoint tensor names -> parameters of the generic transformer, with strict accounting.

Q/K/V live in one fused ``attn.qkv`` parameter (rows [Q | K | V]) and gate/up in one
``mlp.gate_up`` parameter (rows [gate | up]) for every family: one matmul instead of
three, and separate (LLaMA) and fused (Phi-3) checkpoints load into the same layout.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..config.types import MlpLayout, NormType, QkvLayout, TransformerConfig
from ..errors import WeightError

# Buffers some checkpoints carry that are recomputed, never loaded.
IGNORED_TENSORS = (re.compile(r"(^|\.)rotary_emb\.inv_freq$"),)


@dataclass(frozen=True)
class Target:
    """Where a checkpoint tensor goes: a parameter, optionally a block of its rows."""

    param: str
    rows: tuple[int, int] | None = None


class TensorSource(Protocol):
    """Anything that can list checkpoint tensors and copy one into a destination."""

    def names(self) -> Iterator[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def copy_into(self, name: str, dest: torch.Tensor) -> None: ...


def _norm(mapping: dict[str, Target], hf: str, ours: str, config: TransformerConfig) -> None:
    mapping[f"{hf}.weight"] = Target(f"{ours}.weight")
    if config.norm_type is NormType.LayerNorm:
        mapping[f"{hf}.bias"] = Target(f"{ours}.bias")


def _linear(mapping: dict[str, Target], hf: str, ours: str, bias: bool,
            rows: tuple[int, int] | None = None) -> None:
    mapping[f"{hf}.weight"] = Target(f"{ours}.weight", rows)
    if bias:
        mapping[f"{hf}.bias"] = Target(f"{ours}.bias", rows)


def _attention(mapping: dict[str, Target], hf: str, ours: str, c: TransformerConfig) -> None:
    q_rows = c.num_attention_heads * c.head_dim
    kv_rows = c.num_kv_heads * c.head_dim
    if c.qkv_layout is QkvLayout.Fused:
        _linear(mapping, f"{hf}.qkv_proj", f"{ours}.qkv", c.qkv_bias)
    else:
        _linear(mapping, f"{hf}.q_proj", f"{ours}.qkv", c.qkv_bias, (0, q_rows))
        _linear(mapping, f"{hf}.k_proj", f"{ours}.qkv", c.qkv_bias, (q_rows, q_rows + kv_rows))
        _linear(mapping, f"{hf}.v_proj", f"{ours}.qkv", c.qkv_bias,
                (q_rows + kv_rows, q_rows + 2 * kv_rows))
    _linear(mapping, f"{hf}.o_proj", f"{ours}.o_proj", c.o_proj_bias)
    if c.qk_norm:
        mapping[f"{hf}.q_norm.weight"] = Target(f"{ours}.q_norm.weight")
        mapping[f"{hf}.k_norm.weight"] = Target(f"{ours}.k_norm.weight")


def _mlp(mapping: dict[str, Target], hf: str, ours: str, c: TransformerConfig) -> None:
    inter, bias = c.intermediate_size, c.mlp_bias
    if c.mlp_layout is MlpLayout.Plain:
        _linear(mapping, f"{hf}.c_fc", f"{ours}.fc_in", bias)
        _linear(mapping, f"{hf}.c_proj", f"{ours}.fc_out", bias)
        return
    if c.mlp_layout is MlpLayout.GatedFused:
        _linear(mapping, f"{hf}.gate_up_proj", f"{ours}.gate_up", bias)
    else:
        _linear(mapping, f"{hf}.gate_proj", f"{ours}.gate_up", bias, (0, inter))
        _linear(mapping, f"{hf}.up_proj", f"{ours}.gate_up", bias, (inter, 2 * inter))
    _linear(mapping, f"{hf}.down_proj", f"{ours}.down", bias)


def hf_weight_map(config: TransformerConfig) -> dict[str, Target]:
    """HF tensor name -> Target for every tensor the config implies."""
    mapping: dict[str, Target] = {"model.embed_tokens.weight": Target("embed.weight")}
    for i in range(config.num_layers):
        hf, ours = f"model.layers.{i}", f"blocks.{i}"
        _norm(mapping, f"{hf}.input_layernorm", f"{ours}.ln1", config)
        if config.use_post_norms:  # Gemma 2 names: the post-attention norm is an output norm
            _norm(mapping, f"{hf}.post_attention_layernorm", f"{ours}.ln1_post", config)
            _norm(mapping, f"{hf}.pre_feedforward_layernorm", f"{ours}.ln2", config)
            _norm(mapping, f"{hf}.post_feedforward_layernorm", f"{ours}.ln2_post", config)
        else:
            _norm(mapping, f"{hf}.post_attention_layernorm", f"{ours}.ln2", config)
        _attention(mapping, f"{hf}.self_attn", f"{ours}.attn", config)
        _mlp(mapping, f"{hf}.mlp", f"{ours}.mlp", config)
    _norm(mapping, "model.norm", "ln_final", config)
    if not config.tie_word_embeddings:
        mapping["lm_head.weight"] = Target("unembed.weight")
    return mapping


def with_prefix(mapping: dict[str, Target], prefix: str) -> dict[str, Target]:
    """The same map for a checkpoint that nests the language model under ``prefix``."""
    return {prefix + name: target for name, target in mapping.items()}


def _expected_shape(param: torch.Tensor, rows: tuple[int, int] | None) -> tuple[int, ...]:
    if rows is None:
        return tuple(param.shape)
    return (rows[1] - rows[0], *param.shape[1:])


def load_weights(model: nn.Module, source: TensorSource, mapping: dict[str, Target],
                 *, tied: bool, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Fill every parameter of ``model`` from ``source``; raise one WeightError that lists
    every unused tensor, every missing tensor and every shape mismatch.

    ``skip_prefixes`` names checkpoint parts deliberately not loaded (a vision tower)."""
    params = dict(model.named_parameters())
    unmapped = sorted(set(params) - {t.param for t in mapping.values()})
    if unmapped:  # the model and the map disagree: a bug in torch-mi, not in the checkpoint
        raise WeightError(f"internal error: no checkpoint tensor maps to {unmapped}")
    seen: set[str] = set()
    unused: list[str] = []
    mismatched: list[str] = []
    tied_head: str | None = None
    for name in source.names():
        target = mapping.get(name)
        if target is None:
            if any(p.search(name) for p in IGNORED_TENSORS) or name.startswith(skip_prefixes):
                continue
            if tied and name == "lm_head.weight":
                tied_head = name
                continue
            unused.append(name)
            continue
        param = params[target.param]
        expected = _expected_shape(param, target.rows)
        got = tuple(source.shape(name))
        if got != expected:
            mismatched.append(f"{name}: checkpoint {list(got)}, model expects {list(expected)}")
            continue
        dest = param.data if target.rows is None else param.data[target.rows[0]:target.rows[1]]
        source.copy_into(name, dest)
        seen.add(name)
    missing = sorted(set(mapping) - seen - {m.split(":")[0] for m in mismatched})
    _raise_if_bad(unused, missing, mismatched)
    if tied_head is not None:
        _check_tied_head(source, tied_head, params["embed.weight"])


def _raise_if_bad(unused: list[str], missing: list[str], mismatched: list[str]) -> None:
    if not (unused or missing or mismatched):
        return
    lines = ["the checkpoint does not match the model config:"]
    for title, items in (("missing tensors", missing), ("unused checkpoint tensors", unused),
                         ("shape mismatches", mismatched)):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {item}" for item in shown)
    lines.append("  Check that config.json belongs to these weights (model_type, sizes, "
                 "tie_word_embeddings, biases).")
    raise WeightError("\n".join(lines))


def _check_tied_head(source: TensorSource, name: str, embed: torch.Tensor) -> None:
    """A tied model may still ship lm_head.weight; accept it only if it is the embedding."""
    if tuple(source.shape(name)) != tuple(embed.shape):
        raise WeightError(f"{name} has shape {list(source.shape(name))} but the config ties it to "
                          f"the embedding {list(embed.shape)}; set tie_word_embeddings to false")
    head = torch.empty(embed.shape, dtype=embed.dtype, device=embed.device)
    source.copy_into(name, head)
    if not torch.equal(head, embed.data):
        raise WeightError(f"config.json ties the output head to the embedding, but the "
                          f"checkpoint's {name} differs from it; set tie_word_embeddings to false")
