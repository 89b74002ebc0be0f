"""Attribution graph of a prompt (circuit-tracer's method): compute, prune, score, export.

Two paths, chosen offline (no network):

* real: if ``mntss/clt-gemma-2-2b-426k`` and ``google/gemma-2-2b`` are both in the HF
  cache, the graph is built on Gemma-2-2B with those cross-layer transcoders (on the GPU
  if there is one; on CPU expect minutes);
* fitted (default everywhere else): per-layer transcoders for the embedded SmolLM2-135M
  are fitted in a few seconds from captured activations and written in circuit-tracer's
  per-layer layout (``layer_{l}.safetensors`` + ``config.yaml``). Each layer's JumpReLU
  encoder reads ``ln2.hook_normalized`` along sampled centred inputs (threshold: each
  feature fires on ~10% of the fitting positions); its decoder is the ridge least-squares
  map from those activations to the real MLP output, so the features explain part of
  what every MLP writes and the error nodes carry the rest.

The script prints the top features and edges of the pruned graph, the replacement and
completeness scores, and writes to ``--out`` (default: a new temporary folder) the full
graph (``graph.graph.safetensors`` + ``graph.graph.json``, ``Graph.load`` reads them), the
Neuronpedia JSON (``graph.json``), the viewer page (``graph.html``) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from _dictionaries import capture
from safetensors.torch import save_file

import torch_mi as mi
from torch_mi.attribution import Graph, attribute, compute_graph_scores, prune_graph
from torch_mi.attribution.neuronpedia import GraphExport, to_neuronpedia_json
from torch_mi.attribution.viewer import write_html
from torch_mi.dictionaries import CrossLayerTranscoder
from torch_mi.errors import MIError

REAL_CLT, REAL_MODEL = "mntss/clt-gemma-2-2b-426k", "google/gemma-2-2b"
FIT_TEXT = (
    "The capital of France is Paris, and the capital of Italy is Rome. Berlin is the capital "
    "of Germany. Madrid is in Spain and Lisbon is in Portugal. Roses are red, violets are "
    "blue, sugar is sweet and so are you. In 1969 the first humans walked on the Moon. The "
    "quick brown fox jumps over the lazy dog. She opened the door and saw the rain falling "
    "on the garden. def add(a, b):\n    return a + b\nThe Eiffel Tower is in Paris, France."
)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--out", default=None, help="output folder (default: a new temp folder)")
    p.add_argument("--features", type=int, default=32, help="fitted features per layer (32)")
    p.add_argument("--max-feature-nodes", type=int, default=128,
                   help="keep the N most influential features (128)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per backward pass (64)")
    p.add_argument("--offline-fit", action="store_true",
                   help="use the fitted SmolLM2 transcoders even if real CLTs are cached")
    return p.parse_args()


def cached_snapshot(repo_id: str) -> Path | None:
    """The local folder of ``repo_id``'s cached snapshot, or None (never the network)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing
        return None


def fit_layer(x: torch.Tensor, y: torch.Tensor, n: int, gen: torch.Generator
              ) -> dict[str, torch.Tensor]:
    """One JumpReLU transcoder, circuit-tracer's per-layer keys, from inputs x [N, D] and
    MLP outputs y [N, D]: W_enc [F, D], b_enc [F], threshold [F], W_dec [F, D], b_dec [D]."""
    mean = x.mean(0)
    dirs = x[torch.randint(0, x.shape[0], (n,), generator=gen)] - mean  # [F, D]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    pre = (x - mean) @ dirs.T  # [N, F]
    threshold = pre.quantile(0.9, dim=0)
    acts = pre * (pre > threshold)  # [N, F] JumpReLU activations on the fitting data
    y_mean = y.mean(0)
    gram = acts.T @ acts  # [F, F]
    ridge = 1e-2 * gram.diagonal().mean().clamp_min(1e-6) * torch.eye(n)
    w_dec = torch.linalg.solve(gram + ridge, acts.T @ (y - y_mean))  # [F, D]
    return {"W_enc": dirs.contiguous(), "b_enc": -(dirs @ mean),
            "activation_function.threshold": threshold.contiguous(), "W_dec": w_dec.contiguous(),
            "b_dec": y_mean.contiguous()}


def write_fitted_transcoders(model: mi.MIModel, folder: Path, n_features: int) -> Path:
    """Per-layer transcoders over every layer, written as circuit-tracer writes them."""
    L = model.num_layers
    ins = [mi.HookPoint.parse(f"blocks.{layer}.ln2.hook_normalized") for layer in range(L)]
    outs = [mi.HookPoint.parse(f"blocks.{layer}.hook_mlp_out") for layer in range(L)]
    acts = capture(model, ins + outs, [FIT_TEXT])
    gen = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    for layer in range(L):
        tensors = fit_layer(acts[ins[layer]], acts[outs[layer]], n_features, gen)
        save_file(tensors, str(folder / f"layer_{layer}.safetensors"))
    (folder / "config.yaml").write_text(
        'model_name: "fitted-on-the-fly"\nmodel_kind: transcoder_set\n'
        'feature_input_hook: "ln2.hook_normalized"\nfeature_output_hook: "hook_mlp_out"\n')
    return folder


def with_bos(model: mi.MIModel, ids: torch.Tensor) -> torch.Tensor:
    """Prepend the BOS id when the tokenizer does not (as circuit-tracer does): position
    0 carries no features, so it should be a special token, not the first word."""
    bos = model.require_tokenizer().bos_token_id
    if bos is None or int(ids[0, 0]) == bos:
        return ids
    print(f"prepending BOS id {bos} (position 0 carries no features)")
    return torch.cat([torch.tensor([[bos]], device=ids.device), ids], dim=1)


def label(graph: Graph, tokens: list[str], index: int) -> str:
    kind, key = graph.node(index)
    if kind == "feature":
        return f"feature L{key[0]}#{key[2]}@{tokens[key[1]]!r}"
    if kind == "error":
        return f"error L{key[0]}@{tokens[key[1]]!r}"
    if kind == "token":
        return f"token {tokens[key[0]]!r}"
    return f"logit {graph.logit_tokens[index - graph.logit_offset]!r}"


def report(graph: Graph, pruned, tokens: list[str], top: int = 8) -> None:
    kept = torch.nonzero(pruned.node_mask[:graph.n_features]).flatten()
    order = kept[torch.argsort(pruned.cumulative_scores[kept])]  # most influential first
    print(f"\ntop {min(top, len(order))} of {len(kept)} kept features (by influence on the "
          f"logits):")
    for i in order[:top].tolist():
        act = float(graph.activation_values[graph.selected_features[i]])
        print(f"  {label(graph, tokens, i):40s} activation {act:7.3f}")
    weights = graph.adjacency_matrix * pruned.edge_mask
    flat = torch.argsort(weights.abs().flatten(), descending=True)[:top]
    print(f"\ntop {len(flat)} of {int(pruned.edge_mask.sum())} kept edges (source -> target):")
    for f in flat.tolist():
        target, source = divmod(f, graph.n_nodes)
        print(f"  {label(graph, tokens, source):32s} -> {label(graph, tokens, target):32s} "
              f"{float(graph.adjacency_matrix[target, source]):+.4f}")


def open_real(args) -> tuple[mi.MIModel, CrossLayerTranscoder] | None:
    """Gemma-2-2B with its CLTs when both are in the HF cache, else None."""
    clt_folder = None if args.offline_fit else cached_snapshot(REAL_CLT)
    if clt_folder is None or cached_snapshot(REAL_MODEL) is None:
        return None
    try:
        clt = CrossLayerTranscoder.from_local(clt_folder)
        model = mi.MIModel.from_pretrained(REAL_MODEL, device="auto")
    except MIError as exc:  # an incomplete download, say
        print(f"cannot use the cached {REAL_CLT} / {REAL_MODEL}: {exc}")
        return None
    print(f"path: real cross-layer transcoders {REAL_CLT} ({clt_folder}) on {REAL_MODEL}")
    return model, clt


def open_path(args, tmp: Path) -> tuple[mi.MIModel, CrossLayerTranscoder, str]:
    real = open_real(args)
    if real is not None:
        return *real, "real"
    model = mi.MIModel.from_pretrained(device="cpu")
    why = "--offline-fit" if args.offline_fit else f"{REAL_CLT} + {REAL_MODEL} not both cached"
    print(f"path: per-layer transcoders fitted on the fly for the embedded SmolLM2 "
          f"({model.num_layers} layers x {args.features} features; {why})")
    folder = write_fitted_transcoders(model, tmp / "transcoders", args.features)
    return model, CrossLayerTranscoder.from_local(folder), "fitted"


def main() -> None:
    args = parse()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="attribution_"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model, clt, path = open_path(args, Path(tmp))
        ids = with_bos(model, model.encode(args.prompt))
        graph = attribute(model, ids, clt, max_n_logits=5, desired_logit_prob=0.9,
                          max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size)
    tokens = model.to_str_tokens(ids[0], prepend_bos=False)
    print(f"\n{len(graph.activation_values)} active features, {graph.n_features} in the graph, "
          f"{graph.n_nodes} nodes; logit targets " + ", ".join(
              f"{t!r} p={float(p):.3f}" for t, p in zip(graph.logit_tokens,
                                                          graph.logit_probabilities, strict=True)))
    pruned = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
    report(graph, pruned, tokens)
    replacement, completeness = compute_graph_scores(graph)
    print(f"\nreplacement score {replacement:.3f}, completeness score {completeness:.3f}")
    files = graph.save(out / "graph.graph")
    export = GraphExport.from_graph(graph, pruned, tokens, slug="attribution-example",
                                    scan=path, node_threshold=0.8)
    to_neuronpedia_json(export, out / "graph.json")
    html = write_html(out / "graph.json", out / "graph.html", title="attribution example")
    summary = {"path": path, "prompt": args.prompt, "n_nodes": graph.n_nodes,
               "n_features": graph.n_features, "kept_nodes": int(pruned.node_mask.sum()),
               "kept_edges": int(pruned.edge_mask.sum()), "logit_tokens": list(graph.logit_tokens),
               "replacement_score": replacement, "completeness_score": completeness}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"wrote {files[0]}, {files[1]}, {out / 'graph.json'}, {html}, {out / 'summary.json'}")


if __name__ == "__main__":
    main()
