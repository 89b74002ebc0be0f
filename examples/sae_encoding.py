"""Encode a prompt with a sparse autoencoder in every published format.

Offline by default: an SAE is fitted in a second from SmolLM2's residual stream at one
layer, written as a SAELens folder, a Gemma Scope params.npz and an EleutherAI sparsify
folder, and each file is loaded back and used: top features per position, reconstruction
error, and agreement between the formats (SAELens ReLU == Gemma Scope JumpReLU at
threshold 0; sparsify keeps the top k). With ``--sae-repo/--sae-id`` a real SAE from the HF
cache (or the Hub) is used instead, on the model it was trained for (``--model``).

    python examples/sae_encoding.py [--layer 15] [--sae-repo R --sae-id ID --model M]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from _dictionaries import capture, fit_sae, write_gemma_scope, write_saelens, write_sparsify

import torch_mi as mi
from torch_mi.dictionaries import SparseAutoencoder


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2")
    p.add_argument("--prompt", default="The capital of France is Paris")
    p.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--sae-repo", default=None, help="a real SAE repo (e.g. a Gemma Scope one)")
    p.add_argument("--sae-id", default=None, help="its folder or .../params.npz in the repo")
    p.add_argument("--out", default="out")
    return p.parse_args()


def show(name: str, sae: SparseAutoencoder, model: mi.MIModel, prompt: str) -> torch.Tensor:
    ids = model.encode(prompt)
    x = model.forward(ids, mi.HookSpec().capture(sae.hook_point))[sae.hook_point][0]  # [S, D]
    feats = sae.encode(x)  # [S, F]
    tokens = model.to_str_tokens(ids[0])
    print(f"\n{name}: {sae.config.architecture.value}, d_sae={sae.d_sae}, hook "
          f"{sae.config.hook_name}; relative reconstruction error after the first token "
          f"{float((sae.reconstruct(x[1:]) - x[1:]).norm() / x[1:].norm()):.3f}")
    for s, token in enumerate(tokens):
        active = sae.encode_sparse(x[s])
        top = ", ".join(f"{f}={v:.2f}" for f, v in active.top_k(3))
        print(f"  {s:2d} {token!r:>12}  {len(active):4d} active  {top}")
    return feats


def main() -> None:
    args = parse()
    model = mi.MIModel.from_pretrained(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.sae_repo:
        sae = SparseAutoencoder.from_pretrained(args.sae_repo, args.sae_id)
        show(f"{args.sae_repo}/{args.sae_id}", sae, model, args.prompt)
        return
    layer = model.num_layers // 2 if args.layer is None else args.layer
    hook = f"blocks.{layer}.hook_resid_post"
    acts = capture(model, [mi.HookPoint.parse(hook)])[mi.HookPoint.parse(hook)]
    tensors = fit_sae(acts, args.d_sae)
    print(f"fitted a {args.d_sae}-feature SAE on {acts.shape[0]} positions of {hook}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        saelens = SparseAutoencoder.from_local(write_saelens(root / "saelens", tensors, hook))
        npz = SparseAutoencoder.from_npz(write_gemma_scope(root / "gemmascope", tensors), layer)
        sparsify = SparseAutoencoder.from_local(write_sparsify(root / "sparsify", tensors, k=8),
                                                hook_name=hook)
        a = show("SAELens folder", saelens, model, args.prompt)
        b = show("Gemma Scope params.npz", npz, model, args.prompt)
        c = show("sparsify folder (TopK k=8)", sparsify, model, args.prompt)
    same = bool(torch.allclose(a, b, atol=1e-4, rtol=1e-4))
    print(f"\nSAELens ReLU == Gemma Scope JumpReLU (threshold 0): {same}")
    print(f"sparsify active per position: {(c > 0).sum(-1).tolist()} (<= k=8)")
    (out / "sae_encoding.json").write_text(json.dumps(
        {"hook": hook, "d_sae": args.d_sae, "formats_agree": same,
         "active_per_position": (a > 0).sum(-1).tolist()}, indent=2))


if __name__ == "__main__":
    main()
