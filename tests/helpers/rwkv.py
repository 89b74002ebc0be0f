"""Tiny random RWKV-6 (x060) and RWKV-7 (x070) checkpoints for oracle tests.

``make_v6`` / ``make_v7`` build BlinkDL-format state dicts (the layout the ``rwkv`` package
loads, oracles.md Appendix B) with every parameter perturbed away from its trivial value
(no zero LoRA, no unit norm, bonus and value-residual terms active), so a term a port drops
or mis-orders changes the logits. ``write_pth`` saves one; ``write_hf_folder`` converts one
to the HF layouts of candle-mi-inventory §5.3 (v6: ``RWKV/v6-Finch-*-HF`` names; v7: fla-hub /
``RWKV/RWKV7-Goose-*-HF`` names) with a config.json, as safetensors.

The converter here is written independently of ``torch_mi.loading.pth`` on purpose: both
are checked against the ``rwkv`` package, never against each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from benchmarks.rwkv_models import RwkvShape, build_v6, build_v7


@dataclass(frozen=True)
class TinyRwkvShape:
    """Sizes of a tiny model: H = hidden / head_size heads."""

    vocab: int = 256
    hidden: int = 128
    layers: int = 3
    head_size: int = 32
    mix_lora: int = 32  # v6 time_maa_w1 rank (HF Finch hard-codes 32 below D=4096)
    decay_lora: int = 64  # v6 time_decay_w1 rank (64 below D=4096)
    w_lora: int = 32  # v7 decay / a / v / gate LoRA ranks
    a_lora: int = 32
    v_lora: int = 16
    g_lora: int = 48

    @property
    def heads(self) -> int:
        return self.hidden // self.head_size


# v6: H = 4 heads of 32. v7: H = 4 heads of 64, because the rwkv package's v7 GroupNorm eps
# is a fixed 64e-5 while HF/fla use head_dim * norm_eps: the two agree only at head size 64.
TINY_V6 = TinyRwkvShape()
TINY_V7 = TinyRwkvShape(hidden=256, head_size=64)


def _shape(s: TinyRwkvShape, version: str) -> RwkvShape:
    """The benchmark builder's shape for a tiny one (v7's decay LoRA rank is ``w_lora``)."""
    return RwkvShape(vocab=s.vocab, hidden=s.hidden, layers=s.layers, head_size=s.head_size,
                     mix_lora=s.mix_lora,
                     decay_lora=s.decay_lora if version == "v6" else s.w_lora,
                     a_lora=s.a_lora, v_lora=s.v_lora, g_lora=s.g_lora)


def make_v6(seed: int = 0, shape: TinyRwkvShape = TINY_V6) -> dict[str, torch.Tensor]:
    """A BlinkDL x060 state dict (RWKV-6 Finch), from the benchmark's builder (one builder
    serves both: every parameter perturbed, seeded)."""
    return build_v6(_shape(shape, "v6"), seed)


def make_v7(seed: int = 0, shape: TinyRwkvShape = TINY_V7) -> dict[str, torch.Tensor]:
    """A BlinkDL x070 state dict (RWKV-7 Goose). Layer 0 carries v0/v1/v2 as real
    checkpoints do; the value residual ignores them there."""
    return build_v7(_shape(shape, "v7"), seed)

def write_pth(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """Save ``sd`` as BlinkDL does (a plain ``torch.save`` of a flat dict)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in sd.items()}, path)
    return path


def num_layers(sd: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))


# ---- HF layouts ---------------------------------------------------------------------------
_V6_PREFIX = (("blocks.0.ln0.", "rwkv.blocks.0.pre_ln."), (".att.", ".attention."),
              (".ffn.", ".feed_forward."))


def _hf_v6_name(name: str) -> str:
    if name == "head.weight":
        return name
    if name == "emb.weight":
        return "rwkv.embeddings.weight"
    if name.startswith("ln_out."):
        return "rwkv." + name
    for old, new in _V6_PREFIX:
        name = name.replace(old, new)
    return name if name.startswith("rwkv.") else "rwkv." + name


def to_hf_v6(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config.json) in the ``RWKV/v6-Finch-*-HF`` layout: BlinkDL names under
    ``rwkv.`` with att->attention, ffn->feed_forward, ln0->pre_ln; shapes unchanged."""
    tensors = {_hf_v6_name(k): v.contiguous() for k, v in sd.items()}
    vocab, hidden = sd["emb.weight"].shape
    heads, head_size = sd["blocks.0.att.time_faaaa"].shape
    config = {"architectures": ["Rwkv6ForCausalLM"], "model_type": "rwkv6",
              "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": num_layers(sd),
              # HF Finch configs store the head *size* in num_attention_heads (inventory §5.1)
              "num_attention_heads": head_size, "head_size": head_size,
              "attention_hidden_size": hidden,
              "intermediate_size": sd["blocks.0.ffn.key.weight"].shape[0],
              "layer_norm_epsilon": 1e-5, "head_size_divisor": 8, "rescale_every": 6,
              "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0,
              "torch_dtype": "float32"}
    assert heads * head_size == hidden
    return tensors, config


_V7_ATT = {"receptance.weight": "r_proj.weight", "key.weight": "k_proj.weight",
           "value.weight": "v_proj.weight", "output.weight": "o_proj.weight",
           "ln_x.weight": "g_norm.weight", "ln_x.bias": "g_norm.bias", "r_k": "r_k",
           **{n: n for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")}}
_V7_LORA = {"w": "w_lora", "a": "a_lora", "v": "v_lora", "g": "g_lora"}


def _v7_att(i: int, rest: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """One ``blocks.i.att.*`` tensor in fla-hub naming (None: dropped, layer-0 v LoRA)."""
    p = f"model.layers.{i}.attn."
    if rest in _V7_ATT:
        return p + _V7_ATT[rest], value
    if rest in ("k_k", "k_a"):
        return p + rest, value.reshape(-1)
    kind, part = rest[0], rest[1:]
    if kind not in _V7_LORA or part not in ("0", "1", "2"):
        raise KeyError(f"unknown x070 attention tensor blocks.{i}.att.{rest}")
    if kind == "v" and i == 0:
        return None
    lora = p + _V7_LORA[kind] + ".lora."
    if part == "0":
        return lora + "2.bias", value.reshape(-1)
    return lora + ("0.weight" if part == "1" else "2.weight"), value.t()


def _hf_v7_tensor(name: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    fixed = {"emb.weight": "model.embeddings.weight", "head.weight": "lm_head.weight",
             "ln_out.weight": "model.norm.weight", "ln_out.bias": "model.norm.bias"}
    if name in fixed:
        return fixed[name], value
    _, layer, part, rest = name.split(".", 3)
    i = int(layer)
    if part == "att":
        return _v7_att(i, rest, value)
    if part == "ffn":
        return f"model.layers.{i}.ffn.{rest}", value.reshape(-1) if rest == "x_k" else value
    norm = {"ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}[part]
    return f"model.layers.{i}.{norm}.{rest}", value


def to_hf_v7(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config.json) in the fla-hub / ``RWKV/RWKV7-Goose-*-HF`` layout: LoRA
    matrices transposed (nn.Linear [out, in]), w0/a0/v0 as the up-projection biases,
    k_k/k_a/ffn.x_k flattened to [D], layer 0's unused v LoRA dropped."""
    tensors = {}
    for name, value in sd.items():
        mapped = _hf_v7_tensor(name, value)
        if mapped is not None:
            tensors[mapped[0]] = mapped[1].contiguous()
    vocab, hidden = sd["emb.weight"].shape
    heads, head_size = sd["blocks.0.att.r_k"].shape
    config = {"architectures": ["RWKV7ForCausalLM"], "model_type": "rwkv7",
              "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": num_layers(sd),
              "head_dim": head_size, "num_heads": heads,
              "decay_low_rank_dim": sd["blocks.0.att.w1"].shape[1],
              "a_low_rank_dim": sd["blocks.0.att.a1"].shape[1],
              "v_low_rank_dim": sd["blocks.0.att.v1"].shape[1],
              "gate_low_rank_dim": sd["blocks.0.att.g1"].shape[1],
              "intermediate_size": sd["blocks.0.ffn.key.weight"].shape[0],
              "hidden_ratio": sd["blocks.0.ffn.key.weight"].shape[0] / hidden,
              "norm_eps": 1e-5, "norm_bias": True, "fuse_norm": False, "attn_mode": "chunk",
              "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0,
              "torch_dtype": "float32"}
    return tensors, config


def write_hf_folder(sd: dict[str, torch.Tensor], folder: Path) -> Path:
    """Convert a BlinkDL state dict (version from its keys) to an HF folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    convert = to_hf_v6 if "blocks.0.att.time_maa_x" in sd else to_hf_v7
    tensors, config = convert(sd)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
