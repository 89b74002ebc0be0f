"""Cross-layer transcoder: encode, attribute by decoder projection, inject a feature.

Offline by default: a CLT over every layer of SmolLM2 is fitted from captured activations
and written in circuit-tracer's layout (W_enc_{l}/W_dec_{l}.safetensors + config.yaml), then
opened lazily like a real one. The script encodes one layer at every position, ranks
features whose decoder vectors point at a target token's unembedding (at one target layer,
and by the max over the layers each feature writes to), and injects the top feature at the
last position into every downstream layer (the seed's ``prepare_hook_injection``: an
``Add`` of strength x the decoder vector at ``ResidPost(l)``), printing the KL and the most
changed next tokens. ``--clt PATH_OR_REPO`` uses a real transcoder (e.g.
``mntss/clt-gemma-2-2b-426k`` with ``--model google/gemma-2-2b``, from the HF cache).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _dictionaries import in_hf_cache, write_fitted_clt

import torch_mi as mi
from torch_mi.dictionaries import (
    CltFeatureId,
    CrossLayerTranscoder,
    build_attribution_graph,
    rank_features_max_over_targets,
)
from torch_mi.interp.results import LogitComparison


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2")
    p.add_argument("--prompt", default="Roses are red, violets are")
    p.add_argument("--target", default=" blue", help="token whose unembedding is the direction")
    p.add_argument("--layer", type=int, default=None, help="layer to encode (default: middle)")
    p.add_argument("--strength", type=float, default=5.0)
    p.add_argument("--clt", default=None, help="a transcoder folder or Hub repo (HF cache)")
    return p.parse_args()


def open_clt(args, model: mi.MIModel, tmp: Path) -> CrossLayerTranscoder:
    if args.clt is None:
        print(f"fitting a CLT over {model.num_layers} layers (16 features each) ...")
        return CrossLayerTranscoder.from_local(write_fitted_clt(model, tmp / "clt"))
    if Path(args.clt).exists():
        return CrossLayerTranscoder.from_local(args.clt)
    if not in_hf_cache(args.clt):
        print(f"note: {args.clt} is not in the HF cache; it is fetched layer by layer")
    return CrossLayerTranscoder.from_pretrained(args.clt)


def run(args, model: mi.MIModel, clt: CrossLayerTranscoder) -> None:
    print(clt)
    layer = model.num_layers // 2 if args.layer is None else args.layer
    ids = model.encode(args.prompt)
    tokens = model.to_str_tokens(ids[0])
    point = clt.config.input_point(layer)
    x = model.forward(ids, mi.HookSpec().capture(point))[point][0]  # [S, D]
    print(f"\ntop-3 features of layer {layer} at each position:")
    for s, token in enumerate(tokens):
        top = clt.top_k(x[s], layer, 3)
        print(f"  {s:2d} {token!r:>10}  " + ", ".join(f"{f}={v:.2f}" for f, v in top))
    target = model.to_single_token(args.target)
    direction = model.embedding_vector(target).float()  # [D] (tied unembedding row)
    last = clt.config.n_layers - 1
    graph = build_attribution_graph(clt, direction, last, top_k=5, cosine=True)
    print(f"\nfeatures writing most along {args.target!r} at layer {last} (cosine):")
    for e in graph:
        print(f"  {e.feature}  {e.score:+.4f}")
    best = rank_features_max_over_targets(clt, direction, top_k=5)
    print("max over target layers (cosine): "
          + ", ".join(f"{e.feature}@L{e.target_layer}={e.score:+.3f}" for e in best))
    feature: CltFeatureId = best[0].feature
    spec = injection(clt, feature, ids.shape[1], args.strength)
    base = model.forward(ids).output()[0, -1]
    steered = model.forward(ids, spec).output()[0, -1]
    cmp = LogitComparison(base, steered)
    print(f"\ninject {feature} x{args.strength:g} at the last position, layers "
          f"{feature.layer}..{clt.config.n_layers - 1}: KL {cmp.kl_divergence():.4f}; "
          f"logit of {args.target!r} {float(base[target]):.3f} -> {float(steered[target]):.3f}")
    tok = model.require_tokenizer()
    for i, pb, po, _ in cmp.top_changed_tokens(5):
        print(f"  {tok.decode_token(i)!r}: {pb:.4f} -> {po:.4f}")
    zero = model.forward(ids, injection(clt, feature, ids.shape[1], 0.0)).output()[0, -1]
    print(f"strength 0 is a no-op: {bool(torch.equal(zero, base))}")


def injection(clt: CrossLayerTranscoder, feature: CltFeatureId, S: int, strength: float
              ) -> mi.HookSpec:
    """strength x W_dec[f, t - s] added at the last position of ResidPost(t), every t >= s."""
    out = mi.HookSpec()
    for t in range(feature.layer, clt.config.n_layers):
        delta = torch.zeros(1, S, clt.config.d_model)
        delta[0, -1] = strength * clt.decoder_vector(feature, t).float()
        out = out.intervene(mi.HookPoint.ResidPost(t), mi.Intervention.Add(delta))
    return out


def main() -> None:
    args = parse()
    model = mi.MIModel.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        run(args, model, open_clt(args, model, Path(tmp)))


if __name__ == "__main__":
    main()
