"""Write random SAEs in the SAELens folder layout (cfg.json + sae_weights.safetensors) and
keep the tensors for hand formulas."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_saelens(root: Path, hook: str, d_in: int = 64, d_sae: int = 256, *, seed: int = 0,
                  apply_b_dec_to_input: bool = True, architecture: str = "standard",
                  extra_cfg: dict | None = None) -> dict[str, torch.Tensor]:
    """A standard (ReLU) or topk SAE reading ``hook``; returns its fp32 tensors."""
    gen = torch.Generator().manual_seed(seed)
    t = {"W_enc": torch.randn(d_in, d_sae, generator=gen) * 0.3,
         "b_enc": torch.randn(d_sae, generator=gen) * 0.1,
         "W_dec": torch.randn(d_sae, d_in, generator=gen) * 0.2,
         "b_dec": torch.randn(d_in, generator=gen) * 0.1}
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec_to_input, "normalize_activations": "none",
           "reshape_activations": "hook_z" if "hook_z" in hook else "none",
           "metadata": {"hook_name": hook, "hook_head_index": None, "model_name": "tiny"},
           "architecture": architecture, **(extra_cfg or {})}
    (root / "cfg.json").write_text(json.dumps(cfg))
    save_file(t, str(root / "sae_weights.safetensors"))
    return t


def hand_encode(t: dict[str, torch.Tensor], x: torch.Tensor, b_dec_in: bool = True) -> torch.Tensor:
    """ReLU SAE features by hand: relu((x - b_dec) W_enc + b_enc)."""
    x = x.float() - (t["b_dec"] if b_dec_in else 0)
    return torch.relu(x @ t["W_enc"] + t["b_enc"])


def hand_recons(t: dict[str, torch.Tensor], x: torch.Tensor, b_dec_in: bool = True) -> torch.Tensor:
    return hand_encode(t, x, b_dec_in) @ t["W_dec"] + t["b_dec"]
