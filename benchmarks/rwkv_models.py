"""Random RWKV-6 (x060) and RWKV-7 (x070) checkpoints in BlinkDL format for the RWKV
benchmark: the layout the ``rwkv`` package loads and torch-mi's ``.pth`` loader reads.

Benchmarks do not import tests, so the builder lives here and the test helper
tests/helpers/rwkv.py builds its tiny models with it. Values are random but in the
ranges trained models use (decays in (0,1) away from 0 and 1, unit-variance projections),
so both libraries run the same arithmetic a real checkpoint would cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RwkvShape:
    vocab: int
    hidden: int
    layers: int
    head_size: int
    mix_lora: int = 32  # v6 time_maa_w1 rank
    decay_lora: int = 64  # v6 time_decay_w1 rank, v7 w rank
    a_lora: int = 64  # v7
    v_lora: int = 32  # v7
    g_lora: int = 128  # v7

    @property
    def heads(self) -> int:
        return self.hidden // self.head_size


# Realistic: the 0.1B-class shape of RWKV-6 Finch / RWKV-7 Goose with the world vocabulary.
FULL = RwkvShape(vocab=65536, hidden=768, layers=12, head_size=64)
# --quick: seconds, only to check that the scenario runs end to end. Head size 64: the
# package's RWKV-7 GroupNorm eps equals HF/fla's only there. The v6 LoRA ranks stay 32/64:
# a BlinkDL .pth has no config and below D=4096 the loader (like HF Finch) assumes them.
QUICK = RwkvShape(vocab=1024, hidden=128, layers=2, head_size=64, a_lora=16, v_lora=16,
                  g_lora=16)


class _Draw:
    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * std + mean

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen)

    def linear(self, rows: int, cols: int) -> torch.Tensor:
        return self.normal(rows, cols, std=cols ** -0.5)


def _common(d: _Draw, s: RwkvShape) -> dict[str, torch.Tensor]:
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


def build_v6(s: RwkvShape, seed: int = 0) -> dict[str, torch.Tensor]:
    d, C = _Draw(seed), s.hidden
    F = int(3.5 * C)
    sd = _common(d, s)
    for i in range(s.layers):
        a, f = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        for n in "xwkvrg":
            sd[a + f"time_maa_{n}"] = d.uniform(1, 1, C)
        sd[a + "time_maa_w1"] = d.normal(C, 5 * s.mix_lora, std=0.2)
        sd[a + "time_maa_w2"] = d.normal(5, s.mix_lora, C, std=0.2)
        sd[a + "time_decay"] = d.normal(1, 1, C, std=0.5, mean=-1.0)
        sd[a + "time_decay_w1"] = d.normal(C, s.decay_lora, std=0.1)
        sd[a + "time_decay_w2"] = d.normal(s.decay_lora, C, std=0.1)
        sd[a + "time_faaaa"] = d.normal(s.heads, s.head_size, std=0.3)
        for n in ("receptance", "key", "value", "output", "gate"):
            sd[a + n + ".weight"] = d.linear(C, C)
        sd[a + "ln_x.weight"] = d.normal(C, mean=1.0)
        sd[a + "ln_x.bias"] = d.normal(C)
        sd[f + "time_maa_k"] = d.uniform(1, 1, C)
        sd[f + "time_maa_r"] = d.uniform(1, 1, C)
        sd[f + "key.weight"] = d.linear(F, C)
        sd[f + "receptance.weight"] = d.linear(C, C)
        sd[f + "value.weight"] = d.linear(C, F)
    return sd


def build_v7(s: RwkvShape, seed: int = 0) -> dict[str, torch.Tensor]:
    d, C = _Draw(seed), s.hidden
    sd = _common(d, s)
    for i in range(s.layers):
        a, f = f"blocks.{i}.att.", f"blocks.{i}.ffn."
        for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[a + n] = d.uniform(1, 1, C)
        for name, rank, mean in (("w", s.decay_lora, -0.5), ("a", s.a_lora, 0.0),
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
            sd[a + n + ".weight"] = d.linear(C, C)
        sd[a + "ln_x.weight"] = d.normal(C, mean=1.0)
        sd[a + "ln_x.bias"] = d.normal(C)
        sd[f + "x_k"] = d.uniform(1, 1, C)
        sd[f + "key.weight"] = d.linear(4 * C, C)
        sd[f + "value.weight"] = d.linear(C, 4 * C)
    return sd


def build(version: str, shape: RwkvShape, seed: int = 0) -> dict[str, torch.Tensor]:
    if version not in ("v6", "v7"):
        raise ValueError(f"version must be 'v6' or 'v7', got {version!r}")
    return (build_v6 if version == "v6" else build_v7)(shape, seed)
