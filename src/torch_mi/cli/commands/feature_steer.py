"""``torch-mi feature-steer``: inject or ablate one dictionary feature; print the changed
continuation, the KL of the next-token distribution and the most changed tokens.

Both are plain ``Add`` interventions (the seed's ``prepare_hook_injection``): injecting adds
``strength x`` the feature's decoder vector (an SAE's at its hook; a transcoder feature of
layer ``s`` at ``ResidPost(l)`` for every layer ``l`` it writes to, which equals adding to
that layer's MLP output); ablating subtracts the feature's own decoder contribution
(its activation on the unedited forward times its decoder vector, so the dictionary's other
features and the model's MLPs run as usual). The continuation is greedy and recomputes
the prompt each step, so the edit follows every new position.
"""

from __future__ import annotations

import argparse

import torch

from ...dictionaries import CltFeatureId, CrossLayerTranscoder, SaeFeatureId, SparseAutoencoder
from ...errors import InputError
from ...hooks.interventions import Intervention
from ...hooks.points import HookPoint
from ...hooks.spec import HookSpec
from ...interp.results import LogitComparison
from ..checks import at_least, finite
from ..common import add_model_args, console, emit_json, load_model
from .features import Dictionary, add_dict_args, dict_label, load_dictionary, prompt_of


def register(sub) -> None:
    p = sub.add_parser("feature-steer", help="inject or ablate a dictionary feature")
    add_dict_args(p)
    p.add_argument("--feature", required=True, metavar="INDEX|LAYER:INDEX",
                   help="SAE feature index, or transcoder feature LAYER:INDEX (or INDEX with "
                        "--layer)")
    p.add_argument("--strength", type=float, default=10.0,
                   help="injection scale of the decoder vector (default 10; negative suppresses)")
    p.add_argument("--ablate", action="store_true",
                   help="remove the feature's contribution instead of injecting it")
    p.add_argument("--position", default="all",
                   help="prompt position to edit (negative from the end) or 'all' (default: "
                        "every position, generated ones included)")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--top-k", type=int, default=5, help="changed tokens listed (default 5)")
    add_model_args(p)
    p.set_defaults(run=run)


def parse_feature(text: str, layer: str | None, dictionary: Dictionary
                  ) -> SaeFeatureId | CltFeatureId:
    """``--feature`` checked against the dictionary's size (before the model loads)."""
    parts = text.split(":")
    if not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts) or len(parts) > 2:
        raise InputError(f"--feature must be INDEX or LAYER:INDEX (non-negative integers), "
                         f"got {text!r:.40}")
    if isinstance(dictionary, SparseAutoencoder):
        if len(parts) != 1:
            raise InputError(f"--feature {text}: an SAE feature is a plain index")
        if int(parts[0]) >= dictionary.d_sae:
            raise InputError(f"--feature {text} is out of range: the SAE has {dictionary.d_sae} "
                             f"features (0..{dictionary.d_sae - 1})")
        return SaeFeatureId(int(parts[0]))
    c = dictionary.config
    if len(parts) == 1:
        if layer is None or not (layer.isascii() and layer.isdigit()):
            raise InputError("a transcoder feature needs its layer: --feature LAYER:INDEX "
                             "(or --layer LAYER)")
        parts = [layer, parts[0]]
    source, index = int(parts[0]), int(parts[1])
    if source >= c.n_layers or index >= c.n_features_per_layer:
        raise InputError(f"--feature {source}:{index} is out of range: the transcoder has "
                         f"layers 0..{c.n_layers - 1} with {c.n_features_per_layer} features each")
    return CltFeatureId(source, index)


def parse_position(text: str, seq_len: int) -> int | None:
    """``--position``: None for every position, else an index into the prompt."""
    if text == "all":
        return None
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 9):
        raise InputError(f"--position must be an integer or 'all', got {text!r:.40}")
    pos = int(text) + (seq_len if text.startswith("-") else 0)
    if not 0 <= pos < seq_len:
        raise InputError(f"--position {text} is out of range: the prompt has {seq_len} tokens")
    return pos


def _coefficients(seq_len: int, position: int | None) -> torch.Tensor:
    """[S] 1 at the edited positions, 0 elsewhere."""
    mask = torch.zeros(seq_len)
    mask[slice(None) if position is None else position] = 1.0
    return mask


def edit_spec(model, dictionary: Dictionary, feature, ids: torch.Tensor, *, ablate: bool,
              strength: float, position: int | None) -> HookSpec:
    """The ``Add`` interventions of one edit on the sequence ``ids`` [1, S]."""
    mask = _coefficients(ids.shape[1], position)  # [S]
    spec = HookSpec()
    if isinstance(dictionary, SparseAutoencoder):
        point = dictionary.hook_point
        if ablate:
            x = model.forward(ids, HookSpec().capture(point))[point][0]  # [S, ...]
            feats = dictionary.encode(x)  # [S, F]
            kept = feats.clone()
            kept[:, feature.index] = 0.0
            delta = dictionary.decode(kept, x) - dictionary.decode(feats, x)  # [S, ...]
            delta = delta * mask.reshape(-1, *[1] * (delta.dim() - 1))
        else:
            vec = strength * dictionary.decoder_vector(feature)  # [d_in]
            delta = mask[:, None] * vec[None].cpu()  # [S, d_in]
            if dictionary.config.reshape_hook_z:  # hook_z captures are [S, H, d_head]
                x_shape = model.forward(ids, HookSpec().capture(point))[point].shape[2:]
                delta = delta.reshape(ids.shape[1], *x_shape)
        return spec.intervene(point, Intervention.Add(delta[None].to(model.device)))
    c = dictionary.config
    targets = range(feature.layer, c.n_layers) if c.is_cross_layer else [feature.layer]
    if ablate:
        point = c.input_point(feature.layer)
        x = model.forward(ids, HookSpec().capture(point))[point][0]  # [S, D]
        coef = -dictionary.encode_dense(x, feature.layer)[:, feature.index].cpu() * mask
    else:
        coef = strength * mask
    for t in targets:
        vec = dictionary.decoder_vector(feature, t)  # W_dec[f, t - s] [D]
        delta = coef[:, None] * vec.float().cpu()[None]  # [S, D]
        spec = spec.intervene(HookPoint.ResidPost(t), Intervention.Add(delta[None].to(model.device)))
    return spec


def greedy(model, ids: torch.Tensor, steps: int, build) -> tuple[torch.Tensor, list[int]]:
    """(first-step last-position logits [V], generated ids); ``build(ids)`` -> HookSpec|None."""
    first, out = None, []
    for _ in range(steps):
        logits = model.forward(ids, build(ids)).output()[0, -1].float().cpu()  # [V]
        first = logits if first is None else first
        nxt = int(logits.argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
    return first, out


def run(args: argparse.Namespace) -> int:
    prompt = prompt_of(args)
    finite("--strength", args.strength)
    at_least("--max-new-tokens", args.max_new_tokens, 1)
    at_least("--top-k", args.top_k, 1)
    dictionary = load_dictionary(args.dict_path, args.layer)
    feature = parse_feature(args.feature, args.layer, dictionary)
    model = load_model(args)
    if isinstance(dictionary, CrossLayerTranscoder) and dictionary.config.n_layers > model.num_layers:
        raise InputError(f"the transcoder has {dictionary.config.n_layers} layers but the model "
                         f"only {model.num_layers}; was it trained on another model?")
    ids = model.encode(prompt)
    position = parse_position(args.position, ids.shape[1])

    def build(seq: torch.Tensor) -> HookSpec:
        return edit_spec(model, dictionary, feature, seq, ablate=args.ablate,
                         strength=args.strength, position=position)

    base_logits, base_ids = greedy(model, ids, args.max_new_tokens, lambda seq: None)
    steer_logits, steer_ids = greedy(model, ids, args.max_new_tokens, build)
    tok = model.require_tokenizer()
    comparison = LogitComparison(base_logits, steer_logits).to_dict(tok.decode_token, args.top_k)
    data = {"prompt": prompt, "dictionary": dict_label(dictionary), "feature": str(feature),
            "mode": "ablate" if args.ablate else "inject",
            "strength": None if args.ablate else args.strength,
            "position": "all" if position is None else position,
            "baseline": tok.decode(base_ids), "steered": tok.decode(steer_ids), **comparison}
    if args.json:
        emit_json(data)
        return 0
    what = "ablated" if args.ablate else f"injected x{args.strength:g}"
    console.print(f"{data['feature']} {what} at position {data['position']} "
                  f"({data['dictionary']})")
    console.print(f"KL(baseline || steered), next token: {data['kl_divergence']:.6f}")
    for row in data["top_changed"]:
        console.print(f"  {row['token']!r}: p {row['p_baseline']:.4f} -> {row['p_intervened']:.4f}")
    console.print(f"baseline: {data['baseline']!r}")
    console.print(f"steered:  {data['steered']!r}")
    return 0
