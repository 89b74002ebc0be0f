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


class _Draw:
    """Seeded random draws, so every tiny model is the same on every machine."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * std + mean

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen) * (high - low) + low


def _common(d: _Draw, s: TinyRwkvShape) -> dict[str, torch.Tensor]:
    C = s.hidden
    sd = {"emb.weight": d.normal(s.vocab, C, std=1.0),
          "blocks.0.ln0.weight": d.normal(C, mean=1.0), "blocks.0.ln0.bias": d.normal(C),
          "ln_out.weight": d.normal(C, mean=1.0), "ln_out.bias": d.normal(C),
          "head.weight": d.normal(s.vocab, C, std=0.2)}
    for i in range(s.layers):
        for norm in ("ln1", "ln2"):
            sd[f"blocks.{i}.{norm}.weight"] = d.normal(C, mean=1.0)
            sd[f"blocks.{i}.{norm}.bias"] = d.normal(C)
    return sd


def _linear(d: _Draw, rows: int, cols: int) -> torch.Tensor:
    """An nn.Linear weight [out, in] with unit-variance outputs."""
    return d.normal(rows, cols, std=cols ** -0.5)


def make_v6(seed: int = 0, shape: TinyRwkvShape = TINY_V6) -> dict[str, torch.Tensor]:
    """A BlinkDL x060 state dict (RWKV-6 Finch)."""
    d, s, C = _Draw(seed), shape, shape.hidden
    F = int(3.5 * C)
    sd = _common(d, s)
    for i in range(s.layers):
        a = f"blocks.{i}.att."
        for n in "xwkvrg":
            sd[a + f"time_maa_{n}"] = d.uniform(1, 1, C)
        sd[a + "time_maa_w1"] = d.normal(C, 5 * s.mix_lora, std=0.2)
        sd[a + "time_maa_w2"] = d.normal(5, s.mix_lora, C, std=0.2)
        sd[a + "time_decay"] = d.normal(1, 1, C, std=0.5, mean=-1.0)
        sd[a + "time_decay_w1"] = d.normal(C, s.decay_lora, std=0.1)
        sd[a + "time_decay_w2"] = d.normal(s.decay_lora, C, std=0.1)
        sd[a + "time_faaaa"] = d.normal(s.heads, s.head_size, std=0.3)
        for n in ("receptance", "key", "value", "output", "gate"):
            sd[a + n + ".weight"] = _linear(d, C, C)
        sd[a + "ln_x.weight"] = d.normal(C, mean=1.0)
        sd[a + "ln_x.bias"] = d.normal(C)
        f = f"blocks.{i}.ffn."
        sd[f + "time_maa_k"] = d.uniform(1, 1, C)
        sd[f + "time_maa_r"] = d.uniform(1, 1, C)
        sd[f + "key.weight"] = _linear(d, F, C)
        sd[f + "receptance.weight"] = _linear(d, C, C)
        sd[f + "value.weight"] = _linear(d, C, F)
    return sd


def make_v7(seed: int = 0, shape: TinyRwkvShape = TINY_V7) -> dict[str, torch.Tensor]:
    """A BlinkDL x070 state dict (RWKV-7 Goose). Layer 0 carries v0/v1/v2 as real
    checkpoints do; the value residual ignores them there."""
    d, s, C = _Draw(seed), shape, shape.hidden
    sd = _common(d, s)
    for i in range(s.layers):
        a = f"blocks.{i}.att."
        for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[a + n] = d.uniform(1, 1, C)
        for name, rank, mean in (("w", s.w_lora, -0.5), ("a", s.a_lora, 0.0),
                                 ("v", s.v_lora, 0.5)):
            sd[a + f"{name}0"] = d.normal(1, 1, C, std=0.5, mean=mean)
            sd[a + f"{name}1"] = d.normal(C, rank, std=0.2)
            sd[a + f"{name}2"] = d.normal(rank, C, std=0.2)
        sd[a + "g1"] = d.normal(C, s.g_lora, std=0.2)
        sd[a + "g2"] = d.normal(s.g_lora, C, std=0.2)
        sd[a + "k_k"] = d.normal(1, 1, C, std=0.1, mean=0.85)
        sd[a + "k_a"] = d.normal(1, 1, C, std=0.2, mean=1.0)
        sd[a + "r_k"] = d.normal(s.heads, s.head_size, std=0.3)
        for n in ("receptance", "key", "value", "output"):
            sd[a + n + ".weight"] = _linear(d, C, C)
        sd[a + "ln_x.weight"] = d.normal(C, mean=1.0)
        sd[a + "ln_x.bias"] = d.normal(C)
        f = f"blocks.{i}.ffn."
        sd[f + "x_k"] = d.uniform(1, 1, C)
        sd[f + "key.weight"] = _linear(d, 4 * C, C)
        sd[f + "value.weight"] = _linear(d, C, 4 * C)
    return sd


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
