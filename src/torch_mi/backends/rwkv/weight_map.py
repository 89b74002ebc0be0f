"""HF checkpoint names -> GenericRwkv parameters (inventory §5.3), for strict accounting.

RWKV-6: ``RWKV/v6-Finch-*-HF`` names (BlinkDL's with ``rwkv.`` / ``attention`` /
``feed_forward`` prefixes). RWKV-7: fla-hub / ``RWKV/RWKV7-Goose-*-HF`` names. Every tensor
the config implies is listed; the loader reports any stray or missing one by name.
"""

from __future__ import annotations

from ..registry import Target, WeightMap
from .config import RwkvConfig

_V6_ATTN = ("time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r",
            "time_maa_g", "time_maa_w1", "time_maa_w2", "time_decay", "time_decay_w1",
            "time_decay_w2", "time_faaaa", "receptance.weight", "key.weight", "value.weight",
            "gate.weight", "output.weight", "ln_x.weight", "ln_x.bias")
_V6_FFN = ("time_maa_k", "time_maa_r", "key.weight", "receptance.weight", "value.weight")
_V7_ATTN = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "k_k", "k_a", "r_k", "r_proj.weight",
            "k_proj.weight", "v_proj.weight", "o_proj.weight", "g_norm.weight", "g_norm.bias")
_V7_LORAS = {"w_lora": True, "a_lora": True, "g_lora": False, "v_lora": True}  # has bias
_NORM = ("weight", "bias")


def _same(mapping: dict[str, Target], hf: str, ours: str, names) -> None:
    for name in names:
        mapping[f"{hf}.{name}"] = Target(f"{ours}.{name}")


def _finish(mapping: dict[str, Target], config: RwkvConfig, head: str) -> WeightMap:
    if not config.tie_word_embeddings:
        mapping[head] = Target("head.weight")
        return WeightMap(mapping)
    return WeightMap(mapping, tied_head=head, tied_to="embed.weight")


def rwkv6_weight_map(config: RwkvConfig) -> WeightMap:
    """HF RWKV-6 name -> Target for every tensor the config implies."""
    mapping: dict[str, Target] = {"rwkv.embeddings.weight": Target("embed.weight")}
    _same(mapping, "rwkv.blocks.0.pre_ln", "ln0", _NORM)
    for i in range(config.num_layers):
        hf, ours = f"rwkv.blocks.{i}", f"blocks.{i}"
        _same(mapping, f"{hf}.ln1", f"{ours}.ln1", _NORM)
        _same(mapping, f"{hf}.ln2", f"{ours}.ln2", _NORM)
        _same(mapping, f"{hf}.attention", f"{ours}.attn", _V6_ATTN)
        _same(mapping, f"{hf}.feed_forward", f"{ours}.ffn", _V6_FFN)
    _same(mapping, "rwkv.ln_out", "ln_out", _NORM)
    return _finish(mapping, config, "head.weight")


def rwkv7_weight_map(config: RwkvConfig) -> WeightMap:
    """fla-hub RWKV-7 name -> Target for every tensor the config implies (``v_lora`` only
    for layers > 0)."""
    mapping: dict[str, Target] = {"model.embeddings.weight": Target("embed.weight")}
    _same(mapping, "model.layers.0.pre_norm", "ln0", _NORM)
    for i in range(config.num_layers):
        hf, ours = f"model.layers.{i}", f"blocks.{i}"
        _same(mapping, f"{hf}.attn_norm", f"{ours}.ln1", _NORM)
        _same(mapping, f"{hf}.ffn_norm", f"{ours}.ln2", _NORM)
        _same(mapping, f"{hf}.attn", f"{ours}.attn", _V7_ATTN)
        for lora, bias in _V7_LORAS.items():
            if lora == "v_lora" and i == 0:
                continue
            base_hf, base = f"{hf}.attn.{lora}.lora", f"{ours}.attn.{lora}"
            mapping[f"{base_hf}.0.weight"] = Target(f"{base}.down.weight")
            mapping[f"{base_hf}.2.weight"] = Target(f"{base}.up.weight")
            if bias:
                mapping[f"{base_hf}.2.bias"] = Target(f"{base}.up.bias")
        _same(mapping, f"{hf}.ffn", f"{ours}.ffn", ("x_k", "key.weight", "value.weight"))
    _same(mapping, "model.norm", "ln_out", _NORM)
    return _finish(mapping, config, "lm_head.weight")
