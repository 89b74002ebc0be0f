"""A simple, honest memory estimate of a GenericRwkv forward (``torch-mi memory``,
``estimate_memory``).

Unlike the transformer plan (which tracks tensor storages stage by stage), this one counts:

* captures: each captured point as its own tensor of its declared shape (an upper bound
  where two captured points are one tensor, e.g. ``resid_post(i)`` and ``resid_pre(i+1)``);
  the WKV state (``rwkv.hook_state``, fp32: the recurrence runs in fp32), the decays and
  ``hook_effective_attn`` [B,H,S,S] at 4 bytes an element even for bf16/fp16 models (an
  upper bound where they are kept in the model dtype);
* logits: [B,S,V] in the model dtype;
* per layer, a working set of fixed counts: the time-mix holds about 16 [B,S,D] tensors
  (normalised input, shifted input, the mixed inputs, r/k/v/w/a/g, the WKV output, the
  gated output) plus the old and new WKV state [B,H,d,d] fp32; the channel-mix holds two
  [B,S,I] and four [B,S,D]. Captured tensors are not subtracted from it. A layer whose
  ``hook_effective_attn`` is captured adds that computation's fp64 temporaries
  (effective_attn.py): the raw rows or columns and their concatenation, two [B,H,S,S], plus
  four [B,H,S,d] (the widened inputs and prefix sums). Block-internal temporaries of the
  RWKV-6 chunked formula are not counted.

The counts were read off the forward code, not fitted to measurements: expect the figure
to be of the right size, not exact (the CLI prints the measured peak next to it). Measured
on the tiny test models (3 layers, 512 tokens, fp32 CPU, contended machine): capturing
everything +19% (v6, D=128) / +22% (v7, D=256); capturing resid_pre/mid/post -35% / -53%
(the token-by-token recurrence's small per-step tensors are not counted).
"""

from __future__ import annotations

import math

from ...errors import MemoryReportError
from ...hooks.points import HookPoint
from ...hooks.spec import HookSpec
from ..protocol import LayerCost

FP32_VARIANTS = frozenset({"RwkvState", "RwkvDecay", "RwkvEffectiveAttn"})
TIME_MIX_RESIDUALS = 16
CHANNEL_MIX_RESIDUALS, CHANNEL_MIX_NEURONS = 4, 2


class RwkvPlan:
    """Captured bytes, logits and per-layer working sets for one (model, spec, shape)."""

    def __init__(self, backend, spec: HookSpec, batch: int, seq: int) -> None:
        self.config = backend.config
        self.shapes = backend.hook_points()
        self.elem = backend.dtype.itemsize
        self.batch, self.seq = batch, seq
        self.captured = list(spec.captures())
        self.order = {p: k for k, p in enumerate(self.shapes)}  # firing order
        self.logits_bytes = batch * seq * self.config.vocab_size * self.elem

    def point_bytes(self, point: HookPoint) -> int:
        """Bytes of the tensor at ``point`` (declared shape, batch/seq substituted)."""
        sizes = {"batch": self.batch, "seq": self.seq}
        try:
            dims = [sizes[d] if isinstance(d, str) else int(d) for d in self.shapes[point]]
        except KeyError:
            raise MemoryReportError(f"hook point '{point}' has a shape {self.shapes[point]} "
                                    f"that is not made of 'batch', 'seq' and integers") from None
        elem = max(self.elem, 4) if point.variant in FP32_VARIANTS else self.elem
        return math.prod(dims) * elem

    def captured_bytes(self) -> int:
        return sum(self.point_bytes(p) for p in self.captured)

    def layer_costs(self) -> list[LayerCost]:
        c, tokens = self.config, self.batch * self.seq
        state = self.batch * c.num_heads * c.head_dim * c.head_dim * 4  # fp32 [B,H,d,d]
        time_mix = TIME_MIX_RESIDUALS * tokens * c.hidden_size * self.elem + 2 * state
        channel_mix = tokens * (CHANNEL_MIX_RESIDUALS * c.hidden_size
                                + CHANNEL_MIX_NEURONS * c.intermediate_size) * self.elem
        attn = {p.layer for p in self.captured if p.variant == "RwkvEffectiveAttn"}
        return [LayerCost(i, False, max(time_mix + (self._effective_attn() if i in attn else 0),
                                        channel_mix))
                for i in range(c.num_layers)]

    def _effective_attn(self) -> int:
        """fp64 temporaries of one layer's effective-attention computation."""
        c, b, s = self.config, self.batch, self.seq
        return (2 * b * c.num_heads * s * s + 4 * b * c.num_heads * s * c.head_dim) * 8

    def _captured_through(self, layer: int | None) -> int:
        """Captured bytes of points that fire up to the end of ``layer`` (None: all)."""
        return sum(self.point_bytes(p) for p in self.captured
                   if layer is None or (p.layer is not None and p.layer <= layer)
                   or p.variant == "Embed")

    def forward_peak(self) -> tuple[int, str]:
        """Largest bytes alive at once (captures so far + working set), and where."""
        residual = self.batch * self.seq * self.config.hidden_size * self.elem
        peak, where = self._captured_through(None) + self.logits_bytes + 2 * residual, "head"
        for cost in self.layer_costs():
            total = self._captured_through(cost.layer) + cost.working_set_bytes + residual
            if total > peak:
                peak, where = total, f"layer {cost.layer}"
        return peak, where
