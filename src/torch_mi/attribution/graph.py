"""The attribution graph and its files (safetensors for tensors + JSON for metadata).

Node order, as circuit-tracer: [selected features, errors (layer-major: layer 0 positions
0..S-1, layer 1 ...), tokens (positions 0..S-1), logits (targets in order)].
``adjacency_matrix[target, source]`` is the direct effect of source on target (rows are
targets). ``active_features`` lists every active feature; ``selected_features`` indexes
the ones that are graph nodes (all of them unless ``max_feature_nodes`` capped the graph).
No pickle: :meth:`Graph.load` reads plain tensors and JSON and checks every shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from torch_mi.errors import ConfigError, WeightError

FORMAT = "torch-mi-attribution-graph/1"
TENSORS = ("input_tokens", "active_features", "activation_values", "selected_features",
           "adjacency_matrix", "logit_token_ids", "logit_probabilities")


@dataclass
class Graph:
    input_tokens: torch.Tensor         # [S] long
    active_features: torch.Tensor      # [n, 3] long: (layer, pos, feature)
    activation_values: torch.Tensor    # [n] fp32
    selected_features: torch.Tensor    # [m] long, indices into active_features
    adjacency_matrix: torch.Tensor     # [N, N] fp32, N = m + L*S + S + k
    logit_token_ids: torch.Tensor      # [k] long
    logit_probabilities: torch.Tensor  # [k] fp32
    logit_tokens: tuple[str, ...]
    n_layers: int
    vocab_size: int
    input_string: str = ""
    config: dict[str, Any] = field(default_factory=dict)  # scan, model, transcoders, options

    def __post_init__(self) -> None:
        validate(self)

    # ---- layout -------------------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        return int(self.input_tokens.shape[0])

    @property
    def n_features(self) -> int:
        """Feature nodes in the graph (selected features)."""
        return int(self.selected_features.shape[0])

    @property
    def n_logits(self) -> int:
        return int(self.logit_token_ids.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.adjacency_matrix.shape[0])

    @property
    def error_offset(self) -> int:
        return self.n_features

    @property
    def token_offset(self) -> int:
        return self.n_features + self.n_layers * self.n_pos

    @property
    def logit_offset(self) -> int:
        return self.token_offset + self.n_pos

    def node(self, index: int) -> tuple[str, tuple[int, ...]]:
        """What node ``index`` is: ("feature", (layer, pos, feature)), ("error", (layer,
        pos)), ("token", (pos,)) or ("logit", (token id,))."""
        if not 0 <= index < self.n_nodes:
            raise ConfigError(f"node {index} is out of range: the graph has {self.n_nodes}")
        if index < self.n_features:
            row = self.active_features[self.selected_features[index]]
            return "feature", tuple(int(v) for v in row.tolist())
        if index < self.token_offset:
            layer, pos = divmod(index - self.error_offset, self.n_pos)
            return "error", (layer, pos)
        if index < self.logit_offset:
            return "token", (index - self.token_offset,)
        return "logit", (int(self.logit_token_ids[index - self.logit_offset]),)

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.safetensors`` and ``<path>.json`` (a .json/.safetensors suffix of
        ``path`` is dropped first); returns both paths."""
        tensors_path, meta_path = graph_paths(path)
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        save_file({name: getattr(self, name).detach().cpu().contiguous() for name in TENSORS},
                  str(tensors_path))
        meta = {"format": FORMAT, "n_layers": self.n_layers, "vocab_size": self.vocab_size,
                "input_string": self.input_string, "logit_tokens": list(self.logit_tokens),
                "config": self.config, "tensors": tensors_path.name}
        meta_path.write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        return tensors_path, meta_path

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        """Read a graph written by :meth:`save`; ConfigError / WeightError for a missing,
        malformed or inconsistent file."""
        tensors_path, meta_path = graph_paths(path)
        for p in (tensors_path, meta_path):
            if not p.is_file():
                raise ConfigError(f"graph file {p} does not exist; Graph.save writes a "
                                  f".safetensors and a .json file with the same stem")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{meta_path} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ConfigError(f"{meta_path} is not a torch-mi attribution graph (expected "
                              f"format {FORMAT!r})")
        try:
            tensors = load_file(str(tensors_path))
        except (SafetensorError, OSError) as exc:
            raise WeightError(f"{tensors_path} is not a readable safetensors file: {exc}") from None
        missing = [name for name in TENSORS if name not in tensors]
        if missing:
            raise WeightError(f"{tensors_path} lacks the tensors {missing}")
        try:
            return cls(**{name: tensors[name] for name in TENSORS},
                       logit_tokens=tuple(meta["logit_tokens"]), n_layers=int(meta["n_layers"]),
                       vocab_size=int(meta["vocab_size"]),
                       input_string=str(meta.get("input_string", "")),
                       config=dict(meta.get("config", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{meta_path} is missing or has a bad entry: {exc}") from None


def graph_paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def _expect(name: str, tensor: object, shape: tuple, dtypes: tuple) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise WeightError(f"graph tensor {name} must be a tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != shape:
        raise WeightError(f"graph tensor {name} has shape {list(tensor.shape)}, expected "
                          f"{list(shape)} for this graph's sizes")
    if tensor.dtype not in dtypes:
        raise WeightError(f"graph tensor {name} has dtype {tensor.dtype}, expected one of "
                          f"{[str(d) for d in dtypes]}")
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise WeightError(f"graph tensor {name} holds NaN or infinite values; the file is "
                          f"corrupt or was written from a failed run: recompute the graph")


def validate(g: Graph) -> None:
    """WeightError unless every tensor's shape fits the graph's sizes."""
    ints, floats = (torch.int64, torch.int32), (torch.float32, torch.float64, torch.bfloat16,
                                                torch.float16)
    if not isinstance(g.input_tokens, torch.Tensor) or g.input_tokens.dim() != 1:
        raise WeightError("graph tensor input_tokens must be 1-D [S]")
    if not isinstance(g.active_features, torch.Tensor) or g.active_features.dim() != 2:
        raise WeightError("graph tensor active_features must be 2-D [n, 3]")
    s, n = g.n_pos, int(g.active_features.shape[0])
    m, k = int(g.selected_features.shape[0]), int(g.logit_token_ids.shape[0])
    total = m + g.n_layers * s + s + k
    _expect("active_features", g.active_features, (n, 3), ints)
    _expect("activation_values", g.activation_values, (n,), floats)
    _expect("selected_features", g.selected_features, (m,), ints)
    _expect("logit_token_ids", g.logit_token_ids, (k,), ints)
    _expect("logit_probabilities", g.logit_probabilities, (k,), floats)
    _expect("adjacency_matrix", g.adjacency_matrix, (total, total), floats)
    if len(g.logit_tokens) != k:
        raise ConfigError(f"the graph has {k} logit targets but {len(g.logit_tokens)} names")
    if m and (int(g.selected_features.min()) < 0 or int(g.selected_features.max()) >= n):
        raise WeightError(f"selected_features must index the {n} active features")
    if n and (int(g.active_features.min()) < 0 or int(g.active_features[:, 0].max()) >= g.n_layers
              or int(g.active_features[:, 1].max()) >= s):
        raise WeightError(f"active_features rows must be (layer < {g.n_layers}, position < {s}, "
                          f"feature >= 0)")
    if k and (int(g.logit_token_ids.min()) < 0 or int(g.logit_token_ids.max()) >= g.vocab_size):
        raise WeightError(f"logit_token_ids must be vocabulary ids below {g.vocab_size}")


__all__ = ["Graph", "graph_paths"]
