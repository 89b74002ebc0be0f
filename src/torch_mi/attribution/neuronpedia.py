"""Neuronpedia graph JSON: write an attribution graph in the schema circuit-tracer's
``create_graph_files`` writes (so Neuronpedia and its frontend read it), and read such a
file back with every field checked.

Why plain inputs: the writer takes tensors and strings (:class:`GraphExport`), not a graph
object, so any graph with circuit-tracer's node order can be exported and the output can be
compared with circuit-tracer's own files field by field.

Node order in ``adjacency`` (rows = targets, columns = sources), as in circuit-tracer:
``[selected features, errors (layer-major, L*S), tokens (S), logits]``.

Schema notes (circuit-tracer 0.5.0 behaviour, kept for compatibility):

* node ids: feature ``{layer}_{feature}_{pos}``, error ``0_{layer}_{pos}``, token
  ``E_{token_id}_{pos}``, logit ``{L+1}_{vocab_id}_{S-1}``. A layer-0 feature ``f`` at
  ``pos`` and the error node of layer ``f`` at ``pos`` share an id; circuit-tracer writes
  both, and so do we. The reader accepts exactly that collision and nothing else.
* every feature is typed ``"cross layer transcoder"`` (per-layer transcoders too); logits
  have no influence (``null``); ``feature`` of a feature node is the Cantor pairing of
  (layer, feature).
* only nodes that touch a kept edge are written, plus every token and logit node.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torch_mi.errors import InputError

FEATURE, ERROR, EMBEDDING, LOGIT = ("cross layer transcoder", "mlp reconstruction error",
                                    "embedding", "logit")
NODE_TYPES = (FEATURE, ERROR, EMBEDDING, LOGIT)
SCHEMA_VERSION = 1
MAX_FILE_BYTES = 512 << 20
MAX_NODES = 1_000_000
MAX_LINKS = 20_000_000


class NeuronpediaFormatError(InputError):
    """A graph JSON file is malformed: wrong type, missing field, dangling link, too big."""


@dataclass
class GraphExport:
    """Everything the Neuronpedia JSON needs, in circuit-tracer's field names.

    ``active_features`` [n_active, 3] (layer, pos, feature); ``activation_values``
    [n_active]; ``selected_features`` [n_sel] indices into ``active_features`` (the feature
    nodes, in node order); ``adjacency`` [N, N]; ``input_tokens`` [S]; ``logit_targets``
    [n_logits] vocab ids; ``logit_probabilities`` [n_logits]; ``node_mask`` [N],
    ``edge_mask`` [N, N] and ``cumulative_scores`` [N] from pruning; ``prompt_tokens`` the
    decoded input tokens (S strings); ``logit_token_strings`` the decoded targets.
    """

    adjacency: torch.Tensor
    active_features: torch.Tensor
    activation_values: torch.Tensor
    selected_features: torch.Tensor
    input_tokens: torch.Tensor
    logit_targets: torch.Tensor
    logit_probabilities: torch.Tensor
    n_layers: int
    node_mask: torch.Tensor
    edge_mask: torch.Tensor
    cumulative_scores: torch.Tensor
    prompt_tokens: list[str]
    logit_token_strings: list[str]
    prompt: str
    slug: str
    scan: str
    node_threshold: float | None = None
    transcoder_list: list[str] = field(default_factory=list)

    @classmethod
    def from_graph(cls, graph: Any, pruned: Any, prompt_tokens: list[str], *, slug: str,
                   scan: str | None = None, node_threshold: float | None = None,
                   transcoder_list: list[str] | None = None) -> GraphExport:
        """From an attribution graph with circuit-tracer's field names (torch-mi's
        ``Graph``: ``adjacency_matrix``, ``logit_token_ids``, ``logit_tokens`` ...) and its
        ``prune_graph`` result (``node_mask``, ``edge_mask``, ``cumulative_scores``).
        ``prompt_tokens`` are the decoded input tokens, one string per position."""
        try:
            config = getattr(graph, "config", None) or {}
            return cls(
                adjacency=graph.adjacency_matrix, active_features=graph.active_features,
                activation_values=graph.activation_values,
                selected_features=graph.selected_features, input_tokens=graph.input_tokens,
                logit_targets=graph.logit_token_ids,
                logit_probabilities=graph.logit_probabilities, n_layers=int(graph.n_layers),
                node_mask=pruned.node_mask, edge_mask=pruned.edge_mask,
                cumulative_scores=pruned.cumulative_scores,
                prompt_tokens=list(prompt_tokens),
                logit_token_strings=list(graph.logit_tokens),
                prompt=str(getattr(graph, "input_string", "")), slug=slug,
                scan=str(scan if scan is not None else config.get("scan") or slug),
                node_threshold=node_threshold, transcoder_list=list(transcoder_list or []))
        except AttributeError as e:
            raise InputError(f"GraphExport.from_graph needs a graph with circuit-tracer's "
                             f"fields and a prune result: {e}") from None

    def check(self) -> None:
        """Shapes agree with one another (InputError naming the field otherwise)."""
        n_sel, s, n_logits = (len(self.selected_features), len(self.input_tokens),
                              len(self.logit_targets))
        n = n_sel + (self.n_layers + 1) * s + n_logits
        expect = {"adjacency": (n, n), "edge_mask": (n, n), "node_mask": (n,),
                  "cumulative_scores": (n,), "logit_probabilities": (n_logits,),
                  "activation_values": (len(self.active_features),)}
        for name, shape in expect.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise InputError(f"GraphExport.{name} has shape {got}, expected {shape} for "
                                 f"{n_sel} features, {self.n_layers} layers, {s} tokens and "
                                 f"{n_logits} logits")
        if self.active_features.ndim != 2 or self.active_features.shape[1] != 3:
            raise InputError(f"GraphExport.active_features must be [n, 3] (layer, pos, "
                             f"feature), got {tuple(self.active_features.shape)}")
        if len(self.prompt_tokens) != s or len(self.logit_token_strings) != n_logits:
            raise InputError(f"GraphExport needs {s} prompt_tokens and {n_logits} "
                             f"logit_token_strings, got {len(self.prompt_tokens)} and "
                             f"{len(self.logit_token_strings)}")


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


def _node(node_id: str, feature: int, layer: str, ctx_idx: int, kind: str, js_id: str, *,
          influence: float | None = None, activation: float | None = None,
          token_prob: float = 0.0, is_target_logit: bool = False, clerp: str = "") -> dict:
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": ctx_idx,
            "feature_type": kind, "token_prob": token_prob, "is_target_logit": is_target_logit,
            "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": js_id, "clerp": clerp,
            "influence": influence, "activation": activation}


def _make_node(g: GraphExport, idx: int, scores: list[float]) -> dict:
    """The JSON node for adjacency index ``idx``."""
    n_sel, s = len(g.selected_features), len(g.input_tokens)
    error_end = n_sel + g.n_layers * s
    if idx < n_sel:
        active = int(g.selected_features[idx])
        layer, pos, feat = (int(v) for v in g.active_features[active].tolist())
        return _node(f"{layer}_{feat}_{pos}", _cantor(layer, feat), str(layer), pos, FEATURE,
                     f"{layer}_{feat}-0", influence=scores[idx],
                     activation=float(g.activation_values[active]))
    if idx < error_end:
        layer, pos = divmod(idx - n_sel, s)
        return _node(f"0_{layer}_{pos}", -1, str(layer), pos, ERROR, f"{layer}_{pos}-0",
                     influence=scores[idx])
    if idx < error_end + s:
        pos = idx - error_end
        tok = int(g.input_tokens[pos])
        return _node(f"E_{tok}_{pos}", pos, "E", pos, EMBEDDING, f"E_{tok}-{pos}",
                     influence=scores[idx])
    k = idx - error_end - s
    vocab, prob, layer = int(g.logit_targets[k]), float(g.logit_probabilities[k]), g.n_layers + 1
    text = g.logit_token_strings[k]
    return _node(f"{layer}_{vocab}_{s - 1}", vocab, str(layer), s - 1, LOGIT,
                 f"L_{vocab}-{s - 1}", token_prob=prob, is_target_logit=k == 0,
                 clerp=f'Output "{text}" (p={prob:.3f})')


def _nodes_and_links(g: GraphExport) -> tuple[list[dict], list[dict]]:
    """Kept nodes (adjacency order) and kept edges (target-major order), then the nodes
    that touch no kept edge dropped (tokens and logits always stay)."""
    scores = g.cumulative_scores.detach().float().cpu().tolist()
    kept = torch.nonzero(g.node_mask.cpu(), as_tuple=False).flatten().tolist()
    nodes = {i: _make_node(g, i, scores) for i in kept}
    dst, src = torch.nonzero(g.edge_mask.cpu(), as_tuple=True)  # [E], [E]
    weights = g.adjacency.detach().float().cpu()[dst, src]  # [E]
    if not torch.isfinite(weights).all():
        raise InputError("the adjacency has NaN or infinite weights on kept edges; JSON "
                         "cannot hold them: check the attribution run")
    links = [{"source": nodes[s]["node_id"], "target": nodes[d]["node_id"], "weight": w}
             for s, d, w in zip(src.tolist(), dst.tolist(), weights.tolist(), strict=True)
             if s in nodes and d in nodes]
    used = {x for link in links for x in (link["source"], link["target"])}
    kept_nodes = [n for n in nodes.values()
                  if n["node_id"] in used or n["feature_type"] in (EMBEDDING, LOGIT)]
    return kept_nodes, links


def to_neuronpedia_json(graph: GraphExport, path: str | os.PathLike | None = None) -> dict:
    """The Neuronpedia graph document for ``graph``; also written to ``path`` (indented
    JSON, parent folders created) when given. Nothing is written if a check fails."""
    if not isinstance(graph, GraphExport):
        raise InputError(f"to_neuronpedia_json takes a GraphExport, got "
                         f"{type(graph).__name__}; build one from the graph's fields")
    graph.check()
    nodes, links = _nodes_and_links(graph)
    doc = {
        "metadata": {"slug": graph.slug, "scan": graph.scan,
                     "transcoder_list": list(graph.transcoder_list),
                     "prompt_tokens": list(graph.prompt_tokens), "prompt": graph.prompt,
                     "node_threshold": graph.node_threshold,
                     "schema_version": SCHEMA_VERSION},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                    "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }
    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return doc


# ---- reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NeuronpediaGraph:
    """A checked graph document: ``nodes`` and ``links`` are the JSON dicts, validated.
    ``duplicate_ids`` lists ids shared by a layer-0 feature and an error node (the one
    collision circuit-tracer's naming produces); links naming them are ambiguous."""

    metadata: dict[str, Any]
    q_params: dict[str, Any]
    nodes: list[dict[str, Any]]
    links: list[dict[str, Any]]
    duplicate_ids: tuple[str, ...] = ()

    @property
    def prompt_tokens(self) -> list[str]:
        return self.metadata["prompt_tokens"]

    def to_dict(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "qParams": self.q_params, "nodes": self.nodes,
                "links": self.links}


def _fail(where: str, what: str) -> NeuronpediaFormatError:
    return NeuronpediaFormatError(f"graph JSON: {where} {what}; write it with "
                                  f"to_neuronpedia_json or circuit-tracer's create_graph_files")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)
            and math.isfinite(float(x)))


_NODE_FIELDS = {  # name -> (check, description, required)
    "node_id": (lambda v: isinstance(v, str) and 0 < len(v) <= 256, "a short string", True),
    "feature": (_is_int, "an integer", True),
    "layer": (lambda v: isinstance(v, str) and len(v) <= 32, "a string", True),
    "ctx_idx": (lambda v: _is_int(v) and v >= 0, "a non-negative integer", True),
    "feature_type": (lambda v: isinstance(v, str) and len(v) <= 64, "a string", True),
    "token_prob": (_is_number, "a finite number", False),
    "is_target_logit": (lambda v: isinstance(v, bool), "true or false", False),
    "clerp": (lambda v: isinstance(v, str) and len(v) <= 4096, "a string", False),
    "jsNodeId": (lambda v: isinstance(v, str) and len(v) <= 256, "a string", False),
    "influence": (lambda v: v is None or _is_number(v), "a finite number or null", False),
    "activation": (lambda v: v is None or _is_number(v), "a finite number or null", False),
}


def _check_node(i: int, node: Any, n_tokens: int) -> None:
    if not isinstance(node, dict):
        raise _fail(f"nodes[{i}]", f"is a {type(node).__name__}, expected an object")
    for name, (ok, desc, required) in _NODE_FIELDS.items():
        if name not in node:
            if required:
                raise _fail(f"nodes[{i}]", f"has no {name!r}")
            continue
        if not ok(node[name]):
            raise _fail(f"nodes[{i}].{name}", f"is {node[name]!r:.80}, expected {desc}")
    if node["ctx_idx"] >= n_tokens:
        raise _fail(f"nodes[{i}].ctx_idx", f"is {node['ctx_idx']}, past the "
                    f"{n_tokens} prompt tokens")


def _check_metadata(meta: Any) -> dict:
    if not isinstance(meta, dict):
        raise _fail("metadata", "is missing or not an object")
    tokens = meta.get("prompt_tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise _fail("metadata.prompt_tokens", "must be a list of strings")
    for name in ("slug", "prompt"):
        if not isinstance(meta.get(name), str):
            raise _fail(f"metadata.{name}", "must be a string")
    if meta.get("scan") is not None and not isinstance(meta["scan"], str):
        raise _fail("metadata.scan", "must be a string or null")
    return meta


def _unique_ids(nodes: list[dict]) -> tuple[str, ...]:
    """Ids seen twice; only a feature/error pair may share one (circuit-tracer's naming)."""
    seen: dict[str, str] = {}
    dupes = []
    for i, node in enumerate(nodes):
        nid, kind = node["node_id"], node["feature_type"]
        if nid in seen:
            if {seen[nid], kind} != {FEATURE, ERROR}:
                raise _fail(f"nodes[{i}].node_id", f"{nid!r} is used twice")
            dupes.append(nid)
            seen[nid] = "both"
        else:
            seen[nid] = kind
    return tuple(dupes)


def _check_links(links: Any, ids: set[str]) -> None:
    for i, link in enumerate(links):
        if not isinstance(link, dict):
            raise _fail(f"links[{i}]", f"is a {type(link).__name__}, expected an object")
        for end in ("source", "target"):
            if not isinstance(link.get(end), str):
                raise _fail(f"links[{i}].{end}", "must be a node id string")
            if link[end] not in ids:
                raise _fail(f"links[{i}].{end}", f"{link[end]!r:.80} names no node")
        if not _is_number(link.get("weight")):
            raise _fail(f"links[{i}].weight", f"is {link.get('weight')!r:.40}, expected a "
                        f"finite number")


def _reject_constant(name: str) -> Any:
    raise _fail("a number", f"is {name}, which JSON does not allow")


def _read_document(path: Path, max_bytes: int) -> Any:
    if not path.is_file():
        raise NeuronpediaFormatError(f"graph JSON {str(path)!r} does not exist or is not a "
                                     f"file")
    size = path.stat().st_size
    if size > max_bytes:
        raise _fail(f"file {path.name!r}", f"is {size} bytes, over the {max_bytes}-byte "
                    f"limit (pass max_bytes= to allow it)")
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _fail(f"file {path.name!r}", f"is not valid UTF-8 JSON ({e})") from None


def load_neuronpedia_json(path: str | os.PathLike, *, max_bytes: int = MAX_FILE_BYTES,
                          max_nodes: int = MAX_NODES,
                          max_links: int = MAX_LINKS) -> NeuronpediaGraph:
    """Read and check a Neuronpedia graph JSON (ours or circuit-tracer's): types of every
    node and link field, link ends that name existing nodes, finite numbers, context
    indices inside the prompt, and size limits (file bytes, node and link counts)."""
    doc = _read_document(Path(path), max_bytes)
    if not isinstance(doc, dict):
        raise _fail("the top level", f"is a {type(doc).__name__}, expected an object")
    meta = _check_metadata(doc.get("metadata"))
    nodes, links = doc.get("nodes"), doc.get("links")
    q_params = doc.get("qParams", {})
    if not isinstance(nodes, list) or not isinstance(links, list):
        raise _fail("nodes/links", "must both be lists")
    if not isinstance(q_params, dict):
        raise _fail("qParams", "must be an object")
    if len(nodes) > max_nodes or len(links) > max_links:
        raise _fail("the graph", f"has {len(nodes)} nodes and {len(links)} links, over the "
                    f"limits ({max_nodes}, {max_links}); pass max_nodes=/max_links=")
    for i, node in enumerate(nodes):
        _check_node(i, node, len(meta["prompt_tokens"]))
    dupes = _unique_ids(nodes)
    _check_links(links, {n["node_id"] for n in nodes})
    return NeuronpediaGraph(meta, q_params, nodes, links, dupes)
