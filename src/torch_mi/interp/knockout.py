"""Attention knockout: remove attention edges (query -> key) before the softmax.

A :class:`KnockoutSpec` selects layers, heads and edges; :func:`create_knockout_mask` turns
it into an additive mask [1,H,S,S] (0 keep, -inf drop) for ``attn.hook_scores``, where our
scores are taken before the causal mask and after any soft-cap, so a knocked-out edge gets
exactly zero probability on every family. :func:`knockout_hooks` places the mask at every
layer the spec selects (docs/porting.md: attention knockout).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from ..errors import InterventionError
from ..hooks.interventions import Intervention
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..prompts import Prompt, PromptBatch, prompt_batch
from ..selection import HeadSpec, LayerSelector, LayerSpec
from .results import BatchComparison, LogitComparison


@dataclass(frozen=True)
class AttentionEdge:
    """An edge from query position ``from_pos`` to key position ``to_pos``; ``None`` on
    either side means "every position"."""

    from_pos: int | None
    to_pos: int | None

    def cells(self, seq_len: int) -> list[tuple[int, int]]:
        """The (query, key) cells this edge covers in a sequence of ``seq_len``."""
        rows = range(seq_len) if self.from_pos is None else [self.from_pos]
        cols = range(seq_len) if self.to_pos is None else [self.to_pos]
        if self.from_pos is None and self.to_pos is None:
            return []
        return [(r, c) for r in rows for c in cols]


def _int_arg(name: str, value: object) -> int:
    """An int position or head index; InterventionError for floats (never truncated)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InterventionError(f"{name} must be an int, got {type(value).__name__} "
                                f"{value!r:.40}")
    return int(value)


class EdgeSelection(LayerSelector):
    """Layers x heads x edges builders shared by knockout and steering specs."""

    def __init__(self) -> None:
        self.layer_spec: LayerSpec = LayerSpec.All
        self.head_spec: HeadSpec = HeadSpec.All
        self.edges: list[AttentionEdge] = []

    def head(self, head: int):
        head = _int_arg("head", head)
        existing = list(self.head_spec.heads) if self.head_spec.kind == "Specific" else []
        self.head_spec = HeadSpec.Specific([*existing, head])
        return self

    def heads(self, heads: Iterable[int]):
        for h in heads:
            self.head(h)
        return self

    def edge(self, from_pos: int, to_pos: int):
        self.edges.append(AttentionEdge(_int_arg("from_pos", from_pos),
                                        _int_arg("to_pos", to_pos)))
        return self

    def from_position(self, pos: int):
        """Every edge out of query ``pos``."""
        self.edges.append(AttentionEdge(_int_arg("pos", pos), None))
        return self

    def to_position(self, pos: int):
        """Every edge into key ``pos``."""
        self.edges.append(AttentionEdge(None, _int_arg("pos", pos)))
        return self

    def from_to_positions(self, from_pos: int, to_positions: Iterable[int]):
        for to in to_positions:
            self.edge(from_pos, to)
        return self

    def applies_to_head(self, head: int) -> bool:
        return self.head_spec.contains(head)

    def max_from_pos(self) -> int | None:
        positions = [e.from_pos for e in self.edges if e.from_pos is not None]
        return max(positions) if positions else None

    def max_to_pos(self) -> int | None:
        positions = [e.to_pos for e in self.edges if e.to_pos is not None]
        return max(positions) if positions else None

    def validate(self, n_layers: int, n_heads: int, seq_len: int) -> None:
        """InterventionError for out-of-range layers, heads or positions, or no edges."""
        self.layer_spec.validate(n_layers)
        self.head_spec.validate(n_heads)
        if not self.edges:
            raise InterventionError(f"{type(self).__name__} has no edges: add some with "
                                    f".edge(from, to), .from_position(p) or .to_position(p)")
        for e in self.edges:
            for pos in (e.from_pos, e.to_pos):
                if pos is not None and not 0 <= pos < seq_len:
                    raise InterventionError(
                        f"edge ({e.from_pos}, {e.to_pos}): position {pos} is outside a "
                        f"sequence of {seq_len} tokens")

    def cell_mask(self, n_heads: int, seq_len: int, device=None) -> torch.Tensor:
        """Boolean [H,S,S]: True at every selected (head, query, key) cell."""
        mask = torch.zeros(n_heads, seq_len, seq_len, dtype=torch.bool, device=device)
        heads = [h for h in range(n_heads) if self.applies_to_head(h)]
        for edge in self.edges:
            for q, k in edge.cells(seq_len):
                mask[heads, q, k] = True
        return mask


class KnockoutSpec(EdgeSelection):
    """Which attention edges to knock out (all layers and heads unless narrowed)."""

    def __repr__(self) -> str:
        return (f"KnockoutSpec(layers={self.layer_spec}, heads={self.head_spec}, "
                f"edges={[(e.from_pos, e.to_pos) for e in self.edges]})")


def create_knockout_mask(spec: EdgeSelection, n_heads: int, seq_len: int,
                         device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [1,H,S,S]: -inf at every selected cell, 0 elsewhere (layers are applied
    by where the mask is placed; see :func:`knockout_hooks`)."""
    cells = spec.cell_mask(n_heads, seq_len, device)
    zeros = torch.zeros(n_heads, seq_len, seq_len, device=device, dtype=dtype)
    return zeros.masked_fill(cells, float("-inf"))[None]


def knockout_hooks(spec: KnockoutSpec, n_layers: int, n_heads: int, seq_len: int,
                   device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> HookSpec:
    """A HookSpec knocking the spec's edges out at every selected layer."""
    spec.validate(n_layers, n_heads, seq_len)
    mask = create_knockout_mask(spec, n_heads, seq_len, device, dtype)
    hooks = HookSpec()
    for layer in spec.layer_spec.resolve(n_layers):
        hooks.intervene(HookPoint.AttnScores(layer), Intervention.Knockout(mask))
    return hooks


class AblationResult(LogitComparison):
    """Baseline vs knocked-out logits at the last position, with the spec that made them."""

    def __init__(self, baseline_logits: torch.Tensor, ablated_logits: torch.Tensor,
                 spec: KnockoutSpec) -> None:
        super().__init__(baseline_logits, ablated_logits)
        self.spec = spec

    @property
    def ablated_logits(self) -> torch.Tensor:
        return self.other_logits


class BatchAblationResult(BatchComparison):
    """Per-prompt :class:`AblationResult` of a batch (``results``) and their aggregates."""

    results: list[AblationResult]


def batch_knockout_mask(spec: EdgeSelection, n_heads: int, batch: PromptBatch,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive mask [B,H,T,T] for a left-padded batch: each row's edges, in that row's own
    positions, shifted past its padding (positions are checked against each row)."""
    width = batch.width
    mask = torch.zeros(len(batch.rows), n_heads, width, width, dtype=dtype,
                       device=batch.ids.device)
    for row, tokens in enumerate(batch.rows):
        off = batch.offset(row)
        cells = spec.cell_mask(n_heads, len(tokens), batch.ids.device)
        mask[row, :, off:, off:] = mask[row, :, off:, off:].masked_fill(cells, float("-inf"))
    return mask


def run_knockout(model: LanguageModel, prompt: Prompt | Sequence[Prompt],
                 spec: KnockoutSpec) -> AblationResult | BatchAblationResult:
    """Baseline and knocked-out forwards of one prompt (text or ids) on ``model``.

    A list of prompts runs as one left-padded batch (two forwards in all); edge positions
    count in each prompt's own tokens, and the result holds one AblationResult per prompt."""
    batch = prompt_batch(model, prompt)
    for tokens in batch.rows:  # every row first: a bad spec fails before any forward
        spec.validate(model.num_layers, model.num_heads, len(tokens))
    mask = batch_knockout_mask(spec, model.num_heads, batch, model.dtype)
    hooks = HookSpec()
    for layer in spec.layer_spec.resolve(model.num_layers):
        hooks.intervene(HookPoint.AttnScores(layer), Intervention.Knockout(mask))
    run = {"attention_mask": batch.attention_mask, "last_logits_only": True}
    baseline = model.forward(batch.ids, **run).output()[:, -1]  # [B, V]
    ablated = model.forward(batch.ids, hooks, **run).output()[:, -1]
    results = [AblationResult(baseline[i], ablated[i], spec) for i in range(len(batch.rows))]
    return results[0] if batch.single else BatchAblationResult(results)
