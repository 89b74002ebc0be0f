"""Write the sae-lens golden files under tests/golden/sae_lens/ (run in its own venv).

sae-lens is not a dependency of the dev environment, so the suite compares against these
committed outputs instead of importing it. Recreate them with (about 80 s to build the venv):

    python3 -m venv /tmp/venvC && /tmp/venvC/bin/pip install torch==2.13.0 \
        && /tmp/venvC/bin/pip install sae-lens
    /tmp/venvC/bin/python tests/oracles/sae_lens_golden.py

Each case is one folder that sae-lens itself saved (``cfg.json`` +
``sae_weights.safetensors``, random weights) plus ``io.safetensors`` holding the inputs
``x`` and sae-lens's outputs on them: ``feats`` (encode), ``recons`` (decode of those
features) and ``out`` (the SAE's forward, i.e. the reconstruction).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import sae_lens
import torch
from sae_lens import SAE
from sae_lens.saes.sae import TrainingSAE
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "golden" / "sae_lens"
D_IN, D_SAE = 64, 256
META = {"model_name": "tiny-llama", "hook_name": "blocks.0.hook_resid_post", "hook_head_index": None}
BASE = dict(d_in=D_IN, d_sae=D_SAE, dtype="float32", device="cpu", metadata=META)
HOOK_Z = {**META, "hook_name": "blocks.1.attn.hook_z"}

CASES: dict[str, dict] = {
    "standard": dict(architecture="standard", **BASE),
    "standard_no_bdec": dict(architecture="standard", apply_b_dec_to_input=False, **BASE),
    "standard_layer_norm": dict(architecture="standard", normalize_activations="layer_norm", **BASE),
    "standard_constant_norm": dict(architecture="standard",
                                   normalize_activations="constant_norm_rescale", **BASE),
    "jumprelu": dict(architecture="jumprelu", **BASE),
    "jumprelu_no_bdec_expected_avg": dict(architecture="jumprelu", apply_b_dec_to_input=False,
                                          normalize_activations="expected_average_only_in", **BASE),
    "topk": dict(architecture="topk", k=8, **BASE),
    "topk_rescale_layer_norm": dict(architecture="topk", k=8, rescale_acts_by_decoder_norm=True,
                                    normalize_activations="layer_norm", **BASE),
    "gated": dict(architecture="gated", **BASE),
    "gated_no_bdec": dict(architecture="gated", apply_b_dec_to_input=False, **BASE),
    "hook_z": dict(architecture="standard", reshape_activations="hook_z",
                   **{**BASE, "metadata": HOOK_Z}),
}


def randomise(module: torch.nn.Module, g: torch.Generator) -> None:
    """Random weights with a realistic share of active features."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in ("threshold", "topk_threshold"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def inputs(g: torch.Generator, hook_z: bool) -> torch.Tensor:
    x = torch.randn(2, 5, D_IN, generator=g) * 2.0 + 0.3  # [B,S,D]: non-zero mean for the norms
    return x.reshape(2, 5, 4, D_IN // 4) if hook_z else x   # hook_z: [B,S,H,d_head]


def write_case(name: str, sae: SAE, x: torch.Tensor) -> None:
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    with torch.no_grad():
        feats = sae.encode(x)
        recons = sae.decode(feats)
        out = sae(x)
    sae.save_model(folder) if not isinstance(sae, TrainingSAE) else sae.save_inference_model(folder)
    save_file({"x": x.contiguous(), "feats": feats.contiguous(), "recons": recons.contiguous(),
               "out": out.contiguous()}, str(folder / "io.safetensors"))
    print(f"{name:32s} L0 {(feats > 0).float().sum(-1).mean().item():6.1f} "
          f"arch {json.loads((folder / 'cfg.json').read_text())['architecture']}")


def main() -> int:
    g = torch.Generator().manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, cfg in CASES.items():
        sae = SAE.from_dict(cfg)
        randomise(sae, g)
        write_case(name, sae, inputs(g, name == "hook_z"))
    # BatchTopK is training-only: sae-lens saves it for inference as JumpReLU with the global
    # threshold; its inference outputs come from reloading what it saved.
    bt = TrainingSAE.from_dict(dict(architecture="batchtopk", k=8, **BASE))
    randomise(bt, g)
    with torch.no_grad():
        bt.topk_threshold.fill_(0.05)
    folder = OUT / "batchtopk"
    shutil.rmtree(folder, ignore_errors=True)
    bt.save_inference_model(folder)
    reloaded = SAE.load_from_disk(folder)
    x = inputs(g, False)
    with torch.no_grad():
        feats = reloaded.encode(x)
        save_file({"x": x, "feats": feats, "recons": reloaded.decode(feats), "out": reloaded(x)},
                  str(folder / "io.safetensors"))
    print(f"{'batchtopk':32s} L0 {(feats > 0).float().sum(-1).mean().item():6.1f} "
          f"arch {json.loads((folder / 'cfg.json').read_text())['architecture']}")
    (OUT / "VERSION").write_text(f"sae-lens {sae_lens.__version__}, torch {torch.__version__}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
