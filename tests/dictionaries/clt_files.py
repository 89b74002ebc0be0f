"""Write random transcoders in the published layouts (inventory §6.1, circuit-tracer's
``to_safetensors``, Gemma Scope ``params.npz``) and keep the tensors for hand formulas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def _rand(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * scale


def write_clt(root: Path, L: int = 3, F: int = 16, D: int = 8, *, jump: bool = False,
              dtype: torch.dtype = torch.float32, seed: int = 0, config: bool = True) -> dict:
    """circuit-tracer CLT: W_enc_{l}.safetensors (W_enc_l [F,D], b_enc_l, b_dec_l,
    threshold_l) and W_dec_{l}.safetensors (W_dec_l [F, L-l, D])."""
    gen = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    t: dict = {"W_enc": [], "b_enc": [], "b_dec": [], "threshold": [], "W_dec": []}
    for layer in range(L):
        w_enc = _rand(gen, F, D, scale=0.5).to(dtype)
        b_enc = _rand(gen, F, scale=0.2).to(dtype)
        b_dec = _rand(gen, D, scale=0.1).to(dtype)
        enc = {f"W_enc_{layer}": w_enc, f"b_enc_{layer}": b_enc, f"b_dec_{layer}": b_dec}
        thr = (torch.rand(F, generator=gen) * 0.5).to(dtype)
        if jump:
            enc[f"threshold_{layer}"] = thr
        w_dec = _rand(gen, F, L - layer, D, scale=0.3).to(dtype)
        save_file(enc, str(root / f"W_enc_{layer}.safetensors"))
        save_file({f"W_dec_{layer}": w_dec}, str(root / f"W_dec_{layer}.safetensors"))
        for key, value in (("W_enc", w_enc), ("b_enc", b_enc), ("b_dec", b_dec),
                           ("threshold", thr if jump else None), ("W_dec", w_dec)):
            t[key].append(value)
    if config:
        (root / "config.yaml").write_text(
            'model_name: "tiny/clt"\nmodel_kind: cross_layer_transcoder\n'
            'feature_input_hook: "hook_resid_mid"\nfeature_output_hook: "hook_mlp_out"\n')
    return t


def write_plt(root: Path, L: int = 3, F: int = 16, D: int = 8, *, skip: bool = True,
              jump: bool = False, seed: int = 1) -> dict:
    """Per-layer bundles layer_{l}.safetensors: W_enc [F,D], W_dec [F,D], b_enc, b_dec,
    optional W_skip [D,D] and activation_function.threshold."""
    gen = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    layers = []
    for layer in range(L):
        t = {"W_enc": _rand(gen, F, D, scale=0.5), "b_enc": _rand(gen, F, scale=0.2),
             "W_dec": _rand(gen, F, D, scale=0.3), "b_dec": _rand(gen, D, scale=0.1)}
        if skip:
            t["W_skip"] = _rand(gen, D, D, scale=0.2)
        if jump:
            t["activation_function.threshold"] = torch.rand(F, generator=gen) * 0.5 - 0.1
        save_file(t, str(root / f"layer_{layer}.safetensors"))
        layers.append(t)
    return {"layers": layers}


def npz_path(layer: int) -> str:
    return f"layer_{layer}/width_16k/average_l0_42/params.npz"


def write_gemma_scope(root: Path, L: int = 2, F: int = 16, D: int = 8, *, seed: int = 2,
                      threshold: bool = True) -> dict:
    """Gemma Scope transcoders: W_enc stored [D, F] (transposed), W_dec [F, D], threshold."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for layer in range(L):
        t = {"W_enc": _rand(gen, D, F, scale=0.5), "W_dec": _rand(gen, F, D, scale=0.3),
             "b_enc": _rand(gen, F, scale=0.2), "b_dec": _rand(gen, D, scale=0.1)}
        if threshold:
            t["threshold"] = torch.rand(F, generator=gen) * 0.5
        path = root / npz_path(layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: v.numpy() for k, v in t.items()})
        layers.append(t)
    return {"layers": layers}
