"""``torch-mi features``: which dictionary features fire at each position of a prompt.

The dictionary (an SAE folder or ``params.npz``, or a transcoder folder / ``config.yaml``) is
opened before the model loads, so a bad path fails fast. An SAE reads its own hook; a
transcoder reads ``feature_input_hook`` of ``--layer`` (default: every layer, streamed one
encoder at a time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.table import Table

from ...dictionaries import CltFeatureId, CrossLayerTranscoder, SaeFeatureId, SparseAutoencoder
from ...errors import InputError
from ...hooks.spec import HookSpec
from ..checks import at_least, non_empty
from ..common import add_model_args, checked_plot, console, emit_json, load_model, parse_layer

Dictionary = SparseAutoencoder | CrossLayerTranscoder
MAX_PLOT_ROWS = 40


def add_dict_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--dict``, ``--prompt`` (or the positional prompt) and ``--layer``: shared with
    ``feature-steer``."""
    p.add_argument("text", nargs="?", default=None, metavar="PROMPT",
                   help="the prompt (or --prompt)")
    p.add_argument("--prompt", default=None, help="the prompt (same as the positional one)")
    p.add_argument("--dict", dest="dict_path", required=required, metavar="PATH",
                   help="SAE folder (SAELens / sparsify) or params.npz, or a transcoder folder "
                        "or circuit-tracer config.yaml")
    p.add_argument("--layer", default=None,
                   help="transcoder layer (default: all layers for features, the feature's "
                        "own layer for feature-steer); the hook layer of a params.npz SAE")


def prompt_of(args: argparse.Namespace) -> str:
    """The one prompt, from the positional argument or ``--prompt``."""
    if (args.text is None) == (args.prompt is None):
        raise InputError("give the prompt once: as the positional PROMPT or as --prompt")
    prompt = args.text if args.text is not None else args.prompt
    non_empty("--prompt", prompt)
    return prompt


def load_dictionary(path_text: str, layer: str | None) -> Dictionary:
    """An SAE (folder with cfg.json, or .npz) or a transcoder (any other folder, .yaml)."""
    path = Path(path_text)
    if not path.exists():
        raise InputError(f"--dict {path_text!r} does not exist; give an SAE folder, a "
                         f"params.npz, or a transcoder folder / config.yaml")
    if path.is_file() and path.suffix.lower() == ".npz":
        if layer is None or not layer.isascii() or not layer.isdigit():
            raise InputError("a params.npz SAE has no config: give its hook layer with "
                             "--layer (a non-negative integer)")
        return SparseAutoencoder.from_local(path, hook_layer=int(layer))
    if path.is_dir() and (path / "cfg.json").is_file():
        return SparseAutoencoder.from_local(path)
    return CrossLayerTranscoder.from_local(path)


def dict_label(dictionary: Dictionary) -> str:
    if isinstance(dictionary, SparseAutoencoder):
        c = dictionary.config
        return f"SAE {c.architecture.value} d_sae={c.d_sae} at {c.hook_name}"
    return repr(dictionary)


def transcoder_layers(args: argparse.Namespace, clt: CrossLayerTranscoder,
                      n_model_layers: int) -> list[int]:
    """``--layer`` of a transcoder (negatives from the end), or every layer."""
    n = clt.config.n_layers
    if n > n_model_layers:
        raise InputError(f"the transcoder has {n} layers but the model only {n_model_layers}; "
                         f"was it trained on another model?")
    return list(range(n)) if args.layer is None else [parse_layer(args.layer, n)]


def encode_prompt(model, dictionary: Dictionary, ids: torch.Tensor, layers: list[int]
                  ) -> list[tuple[int | None, torch.Tensor]]:
    """[(layer, activations [S, F])] of one prompt: one forward capturing every input hook."""
    if isinstance(dictionary, SparseAutoencoder):
        point = dictionary.hook_point
        acts = model.forward(ids, HookSpec().capture(point))[point][0]  # [S, D] or [S, H, dh]
        return [(point.layer, dictionary.encode(acts).cpu())]
    points = {layer: dictionary.config.input_point(layer) for layer in layers}
    cache = model.forward(ids, HookSpec().capture(*points.values()))
    out = [(layer, dictionary.encode_dense(cache[p][0], layer).cpu()) for layer, p in points.items()]
    dictionary.unload_encoder()
    return out


def feature_id(layer: int | None, index: int, dictionary: Dictionary) -> SaeFeatureId | CltFeatureId:
    if isinstance(dictionary, SparseAutoencoder):
        return SaeFeatureId(index)
    return CltFeatureId(layer, index)  # type: ignore[arg-type]


def register(sub) -> None:
    p = sub.add_parser("features", help="top dictionary (SAE / transcoder) features per position")
    add_dict_args(p, required=False)  # not with --stats
    p.add_argument("--stats", default=None, metavar="DIR",
                   help="show the feature statistics of a harvest folder instead")
    p.add_argument("--cards", type=int, default=0, metavar="N",
                   help="with --stats: also write an HTML card (statistics, histogram, top "
                        "contexts) for the N most frequent features, under DIR/cards/")
    p.add_argument("--top-k", type=int, default=5, help="features listed per position (default 5)")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="feature x position heatmap of the top features' activations")
    add_model_args(p)
    p.set_defaults(run=run)


def _top(per_layer, dictionary, position: int, k: int) -> tuple[int, list[dict]]:
    """(number active, top-k [{feature, layer, index, activation}]) at one position."""
    rows = []
    for layer, acts in per_layer:
        a = acts[position]
        idx = torch.nonzero(a != 0).flatten().tolist()
        rows.extend((feature_id(layer, i, dictionary), float(a[i])) for i in idx)
    rows.sort(key=lambda r: (-r[1], getattr(r[0], "layer", 0), r[0].index))
    return len(rows), [{"feature": str(f), "layer": getattr(f, "layer", layer),
                        "index": f.index, "activation": v} for f, v in rows[:k]]


def _heatmap(per_layer, dictionary, positions: list[dict], tokens: list[str], path: str,
             title: str) -> str:
    from ...plots import plot_heatmap

    chosen: dict[tuple, None] = {}
    for pos in positions:
        for f in pos["features"]:
            chosen[(f["layer"], f["index"])] = None
    keys = list(chosen)[:MAX_PLOT_ROWS]
    by_layer = dict(per_layer)
    matrix = torch.zeros(max(1, len(keys)), len(tokens))  # [features, S]
    for r, (layer, index) in enumerate(keys):
        matrix[r] = by_layer[layer][:, index]
    labels = [str(feature_id(layer, i, dictionary)) for layer, i in keys] or ["(none active)"]
    return plot_heatmap(matrix, labels, tokens, path, title=title, colorbar="activation")


def run(args: argparse.Namespace) -> int:
    if args.stats is not None:
        from .features_stats import run_stats

        return run_stats(args)
    if args.cards:
        raise InputError("--cards writes cards from a harvest's statistics: use it with "
                         "--stats DIR")
    if args.dict_path is None:
        raise InputError("give the dictionary with --dict PATH (or --stats DIR for a harvest)")
    prompt = prompt_of(args)
    at_least("--top-k", args.top_k, 1)
    plot_file = checked_plot(args)
    dictionary = load_dictionary(args.dict_path, args.layer)
    model = load_model(args)
    if isinstance(dictionary, CrossLayerTranscoder):
        layers = transcoder_layers(args, dictionary, model.num_layers)
    else:
        layers = []
    ids = model.encode(prompt)
    tokens = model.to_str_tokens(ids[0])
    per_layer = encode_prompt(model, dictionary, ids, layers)
    positions = []
    for s, token in enumerate(tokens):
        n_active, top = _top(per_layer, dictionary, s, args.top_k)
        positions.append({"position": s, "token": token, "n_active": n_active, "features": top})
    data = {"prompt": prompt, "dictionary": dict_label(dictionary),
            "layers": [layer for layer, _ in per_layer], "tokens": tokens,
            "positions": positions}
    if plot_file is not None:
        data["plot"] = _heatmap(per_layer, dictionary, positions, tokens, plot_file,
                                f"top features per position: {data['dictionary']}")
    if args.json:
        emit_json(data)
        return 0
    table = Table(title=f"Top {args.top_k} features per position ({data['dictionary']})")
    for col in ("pos", "token", "active", "top features (activation)"):
        table.add_column(col)
    for pos in positions:
        shown_feats = ", ".join(f"{f['feature']} ({f['activation']:.3g})" for f in pos["features"])
        table.add_row(str(pos["position"]), repr(pos["token"]), str(pos["n_active"]),
                      shown_feats or "-")
    console.print(table)
    if "plot" in data:
        console.print(f"heatmap written to {data['plot']}")
    return 0
