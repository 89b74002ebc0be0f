"""On-disk SAE formats -> (SaeConfig, fp32 tensors in sae-lens layout).

sae-lens layout: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``,
``b_dec [d_in]``, optional ``threshold [d_sae]``; gated SAEs have ``b_gate``, ``b_mag``,
``r_mag`` instead of ``b_enc``. Pickle-based files are refused before anything is read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from torch_mi.dictionaries.sae_config import SaeArchitecture, SaeConfig
from torch_mi.errors import ConfigError, WeightError

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
SAELENS_WEIGHTS = ("sae_weights.safetensors", "model.safetensors")
SPARSIFY_WEIGHTS = "sae.safetensors"
Tensors = dict[str, torch.Tensor]


def refuse_pickle(path: Path) -> None:
    """Pickle files can run code when loaded: refuse them by name, reading nothing."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightError(
            f"{path} is a pickle-based file ({path.suffix}); torch-mi never unpickles weights. "
            f"Convert it to safetensors (or an NPZ of plain arrays) first."
        )


def detect_format(path: Path) -> str:
    """``"saelens"``, ``"sparsify"`` or ``"npz"`` for a folder or file path."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give an SAE folder or a params.npz file.")
    refuse_pickle(path)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise ConfigError(f"{path} is not an SAE file: expected a folder (cfg.json + "
                          f"safetensors) or a Gemma Scope params.npz.")
    if (path / "cfg.json").is_file():
        if any((path / name).is_file() for name in SAELENS_WEIGHTS):
            return "saelens"
        if (path / SPARSIFY_WEIGHTS).is_file():
            return "sparsify"
    if (path / "params.npz").is_file():
        return "npz"
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        refuse_pickle(path / pickles[0])
    raise ConfigError(
        f"{path} holds no known SAE layout: expected cfg.json + sae_weights.safetensors "
        f"(SAELens), cfg.json + sae.safetensors (sparsify) or params.npz (Gemma Scope)."
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}.")
    return data


def _read_safetensors(path: Path) -> Tensors:
    try:
        raw = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise WeightError(f"cannot read {path}: {exc}") from None
    return {k: v.to(torch.float32) for k, v in raw.items()}


def read_saelens(folder: Path) -> tuple[SaeConfig, Tensors]:
    """A SAELens folder: ``cfg.json`` + ``sae_weights.safetensors`` (or ``model.safetensors``)."""
    cfg = SaeConfig.from_saelens_dict(_read_json(folder / "cfg.json"), str(folder / "cfg.json"))
    weights = next((folder / n for n in SAELENS_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise ConfigError(f"{folder} has cfg.json but no sae_weights.safetensors.")
    tensors = _read_safetensors(weights)
    scale = tensors.pop("scaling_factor", None)
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        raise ConfigError(f"{weights}: a finetuning scaling_factor other than 1 is not "
                          f"supported; fold it into W_dec first.")
    return cfg, tensors


def read_npz(path: Path, hook_layer: int, hook_name: str | None = None) -> tuple[SaeConfig, Tensors]:
    """A Gemma Scope ``params.npz``: JumpReLU iff ``threshold`` is present, else ReLU.

    The hook defaults to ``blocks.{hook_layer}.hook_resid_post``; Gemma Scope does not
    subtract ``b_dec`` from the input and does not normalise.
    """
    if path.is_dir():
        path = path / "params.npz"
    refuse_pickle(path)
    if not isinstance(hook_layer, int) or isinstance(hook_layer, bool) or hook_layer < 0:
        raise ConfigError(f"hook_layer must be a non-negative int, got {hook_layer!r}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:  # object arrays need pickle: refused, nothing unpickled
        raise WeightError(f"{path} holds pickled (object) arrays, which torch-mi refuses to "
                          f"load ({exc}); save plain numeric arrays.") from None
    except (OSError, EOFError) as exc:
        raise WeightError(f"cannot read {path} as an NPZ archive: {exc}") from None
    tensors: Tensors = {}
    for name, arr in arrays.items():
        if arr.dtype.kind not in "fiu":
            raise WeightError(f"{path}: array {name!r} has dtype {arr.dtype}; expected numbers.")
        tensors[name] = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32)
    if "W_enc" not in tensors or tensors["W_enc"].dim() != 2:
        raise WeightError(f"{path}: no 2-D W_enc array; is this a Gemma Scope params.npz?")
    d_in, d_sae = tensors["W_enc"].shape
    arch = SaeArchitecture.JUMPRELU if "threshold" in tensors else SaeArchitecture.RELU
    cfg = SaeConfig(d_in=d_in, d_sae=d_sae, architecture=arch,
                    hook_name=hook_name or f"blocks.{hook_layer}.hook_resid_post",
                    apply_b_dec_to_input=False, format="npz")
    return cfg, tensors


_SPARSIFY_HOOKS = {"": "hook_resid_post", ".mlp": "hook_mlp_out", ".self_attn": "hook_attn_out"}


def _sparsify_hook(folder: Path) -> str:
    """Hook of a sparsify folder from its name (sparsify names folders after the module)."""
    if folder.name == "embed_tokens":
        return "hook_embed"
    match = re.fullmatch(r"(?:.*\.)?layers[._](\d+)(\.mlp|\.self_attn)?", folder.name)
    if match is None:
        raise ConfigError(f"cannot tell the hook of sparsify folder {folder.name!r} (expected "
                          f"'layers.N', 'layers.N.mlp' or 'layers.N.self_attn'); pass "
                          f"hook_name explicitly.")
    return f"blocks.{int(match.group(1))}.{_SPARSIFY_HOOKS[match.group(2) or '']}"


def read_sparsify(folder: Path, hook_name: str | None = None) -> tuple[SaeConfig, Tensors]:
    """An EleutherAI sparsify folder: ``cfg.json`` + ``sae.safetensors`` (TopK).

    sparsify stores ``encoder.weight [d_sae, d_in]``, ``encoder.bias``, ``W_dec [d_sae, d_in]``,
    ``b_dec`` and optionally ``W_skip [d_in, d_in]``; it subtracts ``b_dec`` from the input
    unless it is a transcoder.
    """
    raw = _read_json(folder / "cfg.json")
    if raw.get("signed"):
        raise ConfigError(f"{folder}: signed sparsify SAEs are not supported.")
    if raw.get("transcode"):
        raise ConfigError(f"{folder}: this is a sparsify transcoder; load it with the "
                          f"transcoder classes, not SparseAutoencoder.")
    t = _read_safetensors(folder / SPARSIFY_WEIGHTS)
    try:
        w_enc, w_dec = t["encoder.weight"], t["W_dec"]
    except KeyError as exc:
        raise WeightError(f"{folder / SPARSIFY_WEIGHTS}: missing tensor {exc}; is this a "
                          f"sparsify SAE?") from None
    d_sae, d_in = w_enc.shape
    tensors = {"W_enc": w_enc.T.contiguous(), "W_dec": w_dec,
               "b_enc": t.get("encoder.bias", torch.zeros(d_sae)),
               "b_dec": t.get("b_dec", torch.zeros(d_in))}
    if "W_skip" in t:
        tensors["W_skip"] = t["W_skip"]
    k = raw.get("k")
    cfg = SaeConfig(d_in=int(raw.get("d_in", d_in)), d_sae=int(raw.get("num_latents") or d_sae),
                    architecture=SaeArchitecture.TOPK, k=k,
                    hook_name=hook_name or _sparsify_hook(folder),
                    apply_b_dec_to_input=True, format="sparsify")
    return cfg, tensors
