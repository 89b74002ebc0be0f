"""Dictionaries written on the fly for the examples: fitted in a second from captured
activations and saved in the published layouts (SAELens, Gemma Scope NPZ, sparsify,
circuit-tracer CLT), so the examples run offline on any model.

"Fitted" is deliberately crude: each feature is one captured activation (centred, unit
length) used as both encoder and decoder direction, with a bias that keeps only strong
matches active. That gives features that fire on real contexts in milliseconds; real
dictionaries are trained (SAELens, circuit-tracer) and can be loaded instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import torch_mi as mi

CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Roses are red, violets are blue, sugar is sweet and so are you.",
    "def add(a, b):\n    return a + b",
    "In 1969 the first humans walked on the Moon.",
    "The quick brown fox jumps over the lazy dog.",
    "She opened the door and saw the rain falling on the garden.",
]


def capture(model: mi.MIModel, points: list[mi.HookPoint], texts=CORPUS) -> dict:
    """{point: [N, D]} activations of the texts, joined into one forward (fp32 CPU). The
    first position is dropped: its residual is huge in most models and would swamp the fit."""
    cache = model.forward(model.encode(" ".join(texts)), mi.HookSpec().capture(*points))
    return {p: cache[p][0, 1:].float().cpu() for p in points}


def directions(acts: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [D], n unit directions [n, D]) of centred activations, sampled with repeats."""
    gen = torch.Generator().manual_seed(seed)
    mean = acts.mean(0)
    idx = torch.randint(0, acts.shape[0], (n,), generator=gen)
    centred = acts[idx] - mean + 0.05 * acts.std(0) * torch.randn(n, acts.shape[1], generator=gen)
    return mean, centred / centred.norm(dim=-1, keepdim=True)


def fit_sae(acts: torch.Tensor, d_sae: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """sae-lens tensors of a ReLU SAE: W_enc [D, F], b_enc [F], W_dec [F, D], b_dec [D]."""
    mean, dirs = directions(acts, d_sae, seed)
    proj = (acts - mean) @ dirs.T  # [N, F]
    cut = proj.quantile(0.97, dim=0)  # each feature fires on ~3% of positions
    f = torch.relu(proj - cut)  # [N, F] activations on the fitting data
    # Decoder: the ridge least-squares map from those activations back to the inputs.
    gram = f @ f.T  # [N, N]
    ridge = 1e-3 * gram.diagonal().mean().clamp_min(1e-6) * torch.eye(gram.shape[0])
    w_dec = f.T @ torch.linalg.solve(gram + ridge, acts - mean)  # [F, D]
    return {"W_enc": dirs.T.contiguous(), "b_enc": -cut, "W_dec": w_dec,
            "b_dec": mean}


def write_saelens(folder: Path, t: dict, hook_name: str, model_name: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "sae_weights.safetensors"))
    d_in, d_sae = t["W_enc"].shape
    (folder / "cfg.json").write_text(json.dumps({
        "d_in": d_in, "d_sae": d_sae, "architecture": "standard", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "dtype": "float32",
        "metadata": {"hook_name": hook_name, "model_name": model_name}}))
    return folder


def write_gemma_scope(folder: Path, t: dict) -> Path:
    """params.npz as Gemma Scope publishes it (JumpReLU; threshold 0 + b_enc == ReLU here)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.npz"
    # Gemma Scope encodes x @ W_enc + b_enc without subtracting b_dec: fold it into b_enc.
    b_enc = t["b_enc"] - t["b_dec"] @ t["W_enc"]
    np.savez(path, W_enc=t["W_enc"].numpy(), b_enc=b_enc.numpy(), W_dec=t["W_dec"].numpy(),
             b_dec=t["b_dec"].numpy(), threshold=np.zeros(b_enc.shape[0], np.float32))
    return path


def write_sparsify(folder: Path, t: dict, k: int) -> Path:
    """EleutherAI sparsify folder (TopK): encoder.weight [F, D], encoder.bias, W_dec, b_dec."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": t["W_enc"].T.contiguous(), "encoder.bias": t["b_enc"],
               "W_dec": t["W_dec"], "b_dec": t["b_dec"]}, str(folder / "sae.safetensors"))
    d_in, d_sae = t["W_enc"].shape
    (folder / "cfg.json").write_text(json.dumps({"num_latents": d_sae, "k": k, "d_in": d_in,
                                                 "multi_topk": False, "skip_connection": False}))
    return folder


def write_fitted_clt(model: mi.MIModel, folder: Path, n_features: int = 16, seed: int = 0) -> Path:
    """A circuit-tracer CLT (W_enc_{l}/W_dec_{l} files + config.yaml) over every layer.

    Feature ``i`` of layer ``s`` reads the centred resid_mid of one sampled position and
    writes, into each layer ``t >= s``, that position's centred MLP output at ``t`` (scaled
    down with the distance), so its decoder vectors are real MLP outputs.
    """
    L = model.num_layers
    ins = [mi.HookPoint.parse(f"blocks.{layer}.hook_resid_mid") for layer in range(L)]
    outs = [mi.HookPoint.parse(f"blocks.{layer}.hook_mlp_out") for layer in range(L)]
    acts = capture(model, ins + outs)
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(L):
        x = acts[ins[s]]
        idx = torch.randint(0, x.shape[0], (n_features,), generator=gen)
        mean = x.mean(0)
        dirs = x[idx] - mean
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        cut = ((x - mean) @ dirs.T).quantile(0.85, dim=0)  # fires on ~15% of positions
        w_dec = torch.stack([(acts[outs[t]][idx] - acts[outs[t]].mean(0)) / (1 + t - s)
                             for t in range(s, L)], dim=1)  # [F, L - s, D]
        save_file({f"W_enc_{s}": dirs.contiguous(), f"b_enc_{s}": -cut - dirs @ mean,
                   f"b_dec_{s}": acts[outs[s]].mean(0)}, str(folder / f"W_enc_{s}.safetensors"))
        save_file({f"W_dec_{s}": w_dec.contiguous()}, str(folder / f"W_dec_{s}.safetensors"))
    (folder / "config.yaml").write_text(
        'model_name: "fitted-on-the-fly"\nmodel_kind: cross_layer_transcoder\n'
        'feature_input_hook: "hook_resid_mid"\nfeature_output_hook: "hook_mlp_out"\n')
    return folder


def in_hf_cache(repo_id: str) -> bool:
    """Whether any snapshot of ``repo_id`` is in the local HF cache (no network)."""
    try:
        from huggingface_hub import scan_cache_dir

        return any(r.repo_id == repo_id for r in scan_cache_dir().repos)
    except Exception:  # no cache folder yet
        return False
