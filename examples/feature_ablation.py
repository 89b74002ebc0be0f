"""Ablate SAE features: which of the features active at the last position matter for the
next token?

Offline by default: a ReLU SAE is fitted in a second at one layer of SmolLM2 and written as
a SAELens folder. Ablating a feature subtracts its decoder contribution
``decode(f) - decode(f with feature i = 0)`` (= ``f_i W_dec[i]`` for this SAE) from the
activation at the SAE's hook, at every position, as a plain ``Add`` intervention; all
ablations run as one batched forward (row 0 the baseline). A feature that is inactive
everywhere must change nothing (KL exactly 0). ``--sae PATH`` uses a real SAE folder or
params.npz (with ``--model`` the model it was trained on).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _dictionaries import capture, fit_sae, write_saelens

import torch_mi as mi
from torch_mi.dictionaries import SparseAutoencoder
from torch_mi.interp.results import LogitComparison


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--target", default=" Paris")
    p.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    p.add_argument("--top", type=int, default=3, help="features to ablate one by one")
    p.add_argument("--sae", default=None, help="a real SAE folder or params.npz (--layer)")
    return p.parse_args()


def open_sae(args, model: mi.MIModel, tmp: Path) -> SparseAutoencoder:
    layer = model.num_layers // 2 if args.layer is None else args.layer
    if args.sae is not None:
        return SparseAutoencoder.from_local(args.sae, hook_layer=layer)
    hook = f"blocks.{layer}.hook_resid_post"
    acts = capture(model, [mi.HookPoint.parse(hook)])[mi.HookPoint.parse(hook)]
    print(f"fitted a 512-feature SAE on {acts.shape[0]} positions of {hook}")
    return SparseAutoencoder.from_local(write_saelens(tmp / "sae", fit_sae(acts, 512), hook))


def contribution(sae: SparseAutoencoder, feats: torch.Tensor, x: torch.Tensor, i: int
                 ) -> torch.Tensor:
    """What feature ``i`` adds to the reconstruction: [S, D]."""
    without = feats.clone()
    without[:, i] = 0.0
    return sae.decode(feats, x) - sae.decode(without, x)


def main() -> None:
    args = parse()
    model = mi.MIModel.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        sae = open_sae(args, model, Path(tmp))
    ids = model.encode(args.prompt)  # [1, S]
    point = sae.hook_point
    x = model.forward(ids, mi.HookSpec().capture(point))[point][0]  # [S, D]
    feats = sae.encode(x)  # [S, F]
    top = sae.encode_sparse(x[-1]).top_k(args.top)
    inactive = int(torch.nonzero(feats.amax(0) == 0).flatten()[0])
    chosen = [f.index for f, _ in top] + [inactive]
    deltas = [torch.zeros_like(x)] + [-contribution(sae, feats, x, i) for i in chosen]
    payload = torch.stack(deltas).reshape(len(deltas), *x.shape)  # [1 + n, S, D]
    spec = mi.HookSpec().intervene(point, mi.Intervention.Add(payload))
    logits = model.forward(ids.repeat(len(deltas), 1), spec).output()[:, -1]  # [1 + n, V]
    target = model.to_single_token(args.target)
    base = LogitComparison(logits[0], logits[0])
    p0 = base.probability_shift(target)[0]
    print(f"\n{sae.config.hook_name}: {int((feats[-1] > 0).sum())} features active at the last "
          f"position; P({args.target!r}) = {p0:.4f}")
    for row, i in enumerate(chosen, start=1):
        cmp = LogitComparison(logits[0], logits[row])
        what = "inactive" if i == inactive else f"act {float(feats[-1, i]):.2f}"
        print(f"  ablate SAE:{i:<4} ({what}): KL {cmp.kl_divergence():.5f}, "
              f"P({args.target!r}) {p0:.4f} -> {cmp.probability_shift(target)[1]:.4f}")
    print(f"ablating an inactive feature is a no-op: {bool(torch.equal(logits[-1], logits[0]))}")


if __name__ == "__main__":
    main()
