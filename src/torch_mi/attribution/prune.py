"""Influence, pruning and graph scores (the rules of circuit-tracer's ``graph.py``).

Influence is computed on the row-normalised absolute adjacency ``Â``: the logits' weights
``w`` (target probabilities) spread back through ``w Â + w Â² + ...``. Pruning keeps the
nodes holding ``node_threshold`` of the total influence, then the edges holding
``edge_threshold`` of the edge influence, then repeatedly drops feature and error nodes
left without outgoing (or, for features, incoming) kept edges; tokens and logits stay.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from torch_mi.attribution.graph import Graph
from torch_mi.errors import InputError


class PruneResult(NamedTuple):
    node_mask: torch.Tensor          # [N] bool: nodes kept
    edge_mask: torch.Tensor          # [N, N] bool: edges kept (rows targets)
    cumulative_scores: torch.Tensor  # [N] cumulative influence share at each node's rank


def normalize(matrix: torch.Tensor) -> torch.Tensor:
    """|A| with each row summing to 1 (rows of zeros stay zero)."""
    a = matrix.abs()
    return a / a.sum(dim=1, keepdim=True).clamp(min=1e-10)


def influence(normalized: torch.Tensor, weights: torch.Tensor, max_iter: int = 1000
              ) -> torch.Tensor:
    """``w Â + w Â² + ...`` (the graph is a DAG, so the series ends)."""
    current = weights @ normalized
    total = current
    for _ in range(max_iter):
        if not current.any():
            return total
        current = current @ normalized
        total = total + current
    raise InputError(f"influence did not converge in {max_iter} steps: the adjacency matrix "
                     f"is not acyclic (was it built by attribute()?)")


def partial_influence(rows: torch.Tensor, probabilities: torch.Tensor,
                      row_nodes: torch.Tensor, max_iter: int = 128) -> torch.Tensor:
    """Influence on the logits of every column node, from the rows computed so far
    (``rows`` [r, N], ``row_nodes`` [r]: the node of each row); ranks features to visit."""
    normalized = rows.abs()
    normalized = normalized / normalized.sum(dim=1, keepdim=True).clamp(min=1e-8)
    total = torch.zeros(rows.shape[1], dtype=rows.dtype)
    prod = torch.zeros(rows.shape[1], dtype=rows.dtype)
    prod[-len(probabilities):] = probabilities
    for _ in range(max_iter):
        prod = prod[row_nodes] @ normalized
        if not prod.any():
            return total
        total = total + prod
    raise InputError(f"partial influence did not converge in {max_iter} steps")


def _threshold(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """The score above which ``fraction`` of the total score lies."""
    ordered = torch.sort(scores, descending=True).values
    cumulative = torch.cumsum(ordered, dim=0) / torch.sum(ordered)
    index = min(int(torch.searchsorted(cumulative, fraction).item()), len(cumulative) - 1)
    return ordered[index]


def _logit_weights(graph: Graph) -> torch.Tensor:
    w = torch.zeros(graph.n_nodes, dtype=graph.adjacency_matrix.dtype)
    w[-graph.n_logits:] = graph.logit_probabilities.to(w.dtype)
    return w


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _drop_dangling(node_mask: torch.Tensor, edge_mask: torch.Tensor, fixed: int,
                   n_features: int) -> None:
    """In place: features and errors need a kept outgoing edge, features an incoming one."""
    node_mask[:-fixed] &= edge_mask[:, :-fixed].any(0)
    node_mask[:n_features] &= edge_mask[:n_features].any(1)


def prune_graph(graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98
                ) -> PruneResult:
    """Node and edge masks keeping the given shares of influence on the logits."""
    node_threshold = _check_fraction("node_threshold", node_threshold)
    edge_threshold = _check_fraction("edge_threshold", edge_threshold)
    adj = graph.adjacency_matrix.cpu()
    fixed = graph.n_logits + graph.n_pos  # tokens and logits are always kept
    weights = _logit_weights(graph)
    node_infl = influence(normalize(adj), weights)
    node_mask = node_infl >= _threshold(node_infl, node_threshold)
    node_mask[-fixed:] = True
    pruned = adj.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    norm_pruned = normalize(pruned)
    edge_scores = norm_pruned * (influence(norm_pruned, weights) + weights)[:, None]
    edge_mask = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)
    previous = node_mask.clone()
    _drop_dangling(node_mask, edge_mask, fixed, graph.n_features)
    while not torch.equal(previous, node_mask):  # each drop may leave new dangling nodes
        previous = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        _drop_dangling(node_mask, edge_mask, fixed, graph.n_features)
    ordered, order = torch.sort(node_infl, descending=True)
    cumulative = torch.zeros_like(node_infl)
    cumulative[order] = torch.cumsum(ordered, dim=0) / torch.sum(ordered)
    return PruneResult(node_mask, edge_mask, cumulative)


def compute_graph_scores(graph: Graph) -> tuple[float, float]:
    """(replacement score, completeness score).

    Replacement: the share of the tokens' end-to-end influence on the logits that does not
    pass through error nodes. Completeness: the influence-weighted share of every node's
    inputs that come from features or tokens rather than errors.
    """
    adj = graph.adjacency_matrix.cpu()
    err = slice(graph.error_offset, graph.token_offset)
    tok = slice(graph.token_offset, graph.logit_offset)
    weights = _logit_weights(graph)
    normalized = normalize(adj)
    node_infl = influence(normalized, weights)
    token_infl, error_infl = node_infl[tok].sum(), node_infl[err].sum()
    replacement = token_infl / (token_infl + error_infl)
    non_error = 1 - normalized[:, err].sum(dim=-1)
    output_infl = node_infl + weights
    completeness = (non_error * output_infl).sum() / output_infl.sum()
    return float(replacement), float(completeness)


__all__ = ["PruneResult", "compute_graph_scores", "influence", "normalize", "partial_influence",
           "prune_graph"]
