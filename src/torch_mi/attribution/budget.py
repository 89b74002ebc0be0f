"""Memory of an attribution run, estimated before the replacement forward, and the batch
size a memory budget allows.

Why: the replacement forward (batch 1) keeps its autograd graph for every backward pass,
which grows with the prompt (and its square: attention patterns); each backward pass
then carries ``batch`` gradient seeds at once (vmap), and holds their gradients at every
layer's output and the embedding until they are contracted into rows of the adjacency.
The estimate is analytic and approximate (it counts the tensors autograd saves per
layer, the batched gradients, the logits and the adjacency matrices); it is meant to
refuse a run that cannot fit before any large allocation, not to predict the peak to the
byte (docs/attribution.md records measured ratios).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torch_mi.errors import InputError, MemoryReportError
from torch_mi.memory import available_bytes

MIB = 1 << 20
SAVED_RESIDUALS = 14  # [S, D] tensors autograd keeps per layer (norms, q/k/v, z, skip)
BACKWARD_TRANSIENTS = 4  # [S, D] gradients per seed alive inside one layer's backward
WORKING_SET = 64 * MIB  # autograd / vmap / allocator working set (measured 20-40 MB on CPU)


@dataclass(frozen=True)
class AttributionEstimate:
    """Bytes of one attribution run: ``fixed`` (the forward's graph, adjacency, node
    vectors) plus ``per_row`` for each gradient seed of a backward pass."""

    n_tokens: int
    n_features: int
    n_nodes: int
    fixed_bytes: int
    per_row_bytes: int

    def total_bytes(self, batch: int) -> int:
        return self.fixed_bytes + batch * self.per_row_bytes

    def describe(self, batch: int) -> str:
        return (f"estimate for {self.n_tokens} tokens, {self.n_features} active features, "
                f"{self.n_nodes} nodes, batch {batch}: {self.total_bytes(batch) / MIB:,.1f} MB "
                f"({self.fixed_bytes / MIB:,.1f} MB fixed + {self.per_row_bytes / MIB:,.2f} MB "
                f"per batch row)")


def estimate_attribution(model, n_tokens: int, n_features: int, n_selected: int,
                         n_logits: int, decoder_vectors: int | None = None,
                         extra_bytes: int = 0) -> AttributionEstimate:
    """The estimate for a prompt of ``n_tokens`` with ``n_features`` active features of
    which ``n_selected`` become nodes, and ``n_logits`` logit targets. ``decoder_vectors``
    is the number of [D] decoder rows kept (one per active feature and output layer; by
    default every feature writes to every layer, a CLT's upper bound); ``extra_bytes``
    what else the run holds (skip matrices)."""
    c = model.config
    n_layers, d, s = model.num_layers, model.hidden_size, n_tokens
    heads = int(getattr(c, "num_attention_heads", 1))
    width = int(getattr(c, "intermediate_size", 4 * d))
    item = torch.empty((), dtype=model.dtype).element_size()
    row_nodes = n_features + (n_layers + 1) * s
    n_nodes = n_selected + (n_layers + 1) * s + n_logits
    if decoder_vectors is None:
        decoder_vectors = n_features * n_layers
    graph = item * (n_layers * s * (SAVED_RESIDUALS * d + heads * s) + 3 * s * width
                    + model.vocab_size)
    per_row = item * BACKWARD_TRANSIENTS * s * d + 4 * ((n_layers + 1) * s * d + row_nodes)
    nodes = 4 * ((n_selected + n_logits) * (row_nodes + n_logits) + n_nodes * n_nodes
                 + (n_features + decoder_vectors) * d + (n_layers + 1) * s * d)
    fixed = WORKING_SET + extra_bytes + graph + nodes
    return AttributionEstimate(s, n_features, n_nodes, fixed, per_row)


def choose_batch(estimate: AttributionEstimate, batch_size: int, memory_budget: int | None,
                 device: torch.device) -> int:
    """``batch_size`` or the largest smaller batch that fits ``memory_budget`` bytes
    (default: the memory free on ``device``); MemoryReportError naming the estimate when
    even one row does not fit."""
    if memory_budget is not None and (isinstance(memory_budget, bool)
                                      or not isinstance(memory_budget, int) or memory_budget <= 0):
        raise InputError(f"memory_budget must be a positive number of bytes, got "
                         f"{memory_budget!r}")
    budget = memory_budget if memory_budget is not None else available_bytes(device)
    fits = (budget - estimate.fixed_bytes) // max(estimate.per_row_bytes, 1)
    if fits < 1:
        where = "memory_budget" if memory_budget is not None else f"the free memory on {device}"
        raise MemoryReportError(
            f"attribution does not fit: {estimate.describe(1)} exceeds {where} "
            f"({budget / MIB:,.1f} MB); use a shorter prompt, fewer max_feature_nodes or a "
            f"larger budget")
    return int(min(batch_size, fits))


__all__ = ["AttributionEstimate", "choose_batch", "estimate_attribution"]
