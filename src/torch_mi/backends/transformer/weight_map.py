"""HF checkpoint names -> parameters of the generic transformer.

Q/K/V live in one fused ``attn.qkv`` parameter (rows [Q | K | V]) and gate/up in one
``mlp.gate_up`` parameter (rows [gate | up]) for every family: one matmul instead of
three, and separate (LLaMA) and fused (Phi-3) checkpoints load into the same layout.
"""

from __future__ import annotations

from ..registry import Target, WeightMap
from .config.types import MlpLayout, NormType, QkvLayout, TransformerConfig


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


def hf_weight_map(config: TransformerConfig) -> WeightMap:
    """HF tensor name -> Target for every tensor the config implies (HF LLaMA names)."""
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
        return WeightMap(mapping)
    return WeightMap(mapping, tied_head="lm_head.weight", tied_to="embed.weight")
