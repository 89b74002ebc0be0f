"""Random transcoders for the tiny models, in circuit-tracer's file layouts (written with
tests/dictionaries/clt_files.py), plus their raw tensors read back from the files for the
hand-written oracles of the linearity tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.dictionaries.clt_files import write_clt, write_plt

F = 32


def make_clt(root: Path, n_layers: int, d: int, seed: int = 0) -> Path:
    """A JumpReLU cross-layer transcoder reading hook_resid_mid."""
    write_clt(root, n_layers, F, d, jump=True, seed=seed)
    return root


def make_plt(root: Path, n_layers: int, d: int, seed: int = 1) -> Path:
    """Per-layer JumpReLU transcoders with W_skip reading ln2.hook_normalized."""
    write_plt(root, n_layers, F, d, skip=True, jump=True, seed=seed)
    (root / "config.yaml").write_text(
        'model_name: "tiny/plt"\nmodel_kind: transcoder_set\n'
        'feature_input_hook: "ln2.hook_normalized"\nfeature_output_hook: "hook_mlp_out"\n')
    return root


def raw_weights(root: Path, n_layers: int) -> dict:
    """Per layer: W_enc [F,D], b_enc, threshold, b_dec, W_dec [F, L-l, D] (a PLT's [F,1,D])
    and W_skip [D,D] or None, straight from the safetensors files."""
    out = {k: [] for k in ("W_enc", "b_enc", "threshold", "b_dec", "W_dec", "W_skip")}
    for layer in range(n_layers):
        if (root / f"layer_{layer}.safetensors").exists():
            t = load_file(str(root / f"layer_{layer}.safetensors"))
            parts = (t["W_enc"], t["b_enc"], t.get("activation_function.threshold"), t["b_dec"],
                     t["W_dec"][:, None], t.get("W_skip"))
        else:
            e = load_file(str(root / f"W_enc_{layer}.safetensors"))
            dec = load_file(str(root / f"W_dec_{layer}.safetensors"))[f"W_dec_{layer}"]
            parts = (e[f"W_enc_{layer}"], e[f"b_enc_{layer}"], e.get(f"threshold_{layer}"),
                     e[f"b_dec_{layer}"], dec, None)
        for key, value in zip(out, parts, strict=True):
            out[key].append(None if value is None else value.float())
    return out


def encode(w: dict, layer: int, x: torch.Tensor) -> torch.Tensor:
    """Hand-written JumpReLU / ReLU encoding of x [..., D] -> [..., F]."""
    pre = x.to(w["W_enc"][layer].dtype) @ w["W_enc"][layer].T + w["b_enc"][layer]
    thr = w["threshold"][layer]
    return torch.relu(pre) if thr is None else pre * (pre > thr)
