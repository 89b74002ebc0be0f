"""Recurrent multi-pass forwards ("anacrousis", inventory §7.11): run a block of layers
several times, optionally nudging the residual stream between passes.

Our semantics are a true recurrence: pass k >= 2 starts from the output of pass k - 1 plus
the feedback nudge, so every extra pass matters. Upstream restarted every pass from the
input of the loop (so depth > 2 repeated depth 2 exactly and pass 1 was discarded); set
``restart_from_input=True`` to reproduce that. Hooks fire on every visit; a captured point
keeps its last visit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import InterventionError
from ..hooks.runtime import make_runtime
from ..hooks.spec import HookSpec
from ..sampling import sample_token
from .inputs import check_input_ids


@dataclass
class RecurrentFeedbackEntry:
    """Add ``strength * vector`` [D] at token ``position`` before each extra pass."""

    position: int
    vector: torch.Tensor
    strength: float = 1.0


@dataclass
class RecurrentPassSpec:
    """Layers ``loop_start..=loop_end`` run ``depth`` times (chainable builders)."""

    loop_start: int
    loop_end: int
    feedback: list[RecurrentFeedbackEntry] = field(default_factory=list)
    sustained: bool = False
    depth: int = 2
    restart_from_input: bool = False

    @classmethod
    def no_feedback(cls, loop_start: int, loop_end: int) -> RecurrentPassSpec:
        return cls(loop_start, loop_end)

    def with_sustained(self, sustained: bool = True) -> RecurrentPassSpec:
        self.sustained = sustained
        return self

    def with_depth(self, depth: int) -> RecurrentPassSpec:
        self.depth = depth
        return self

    def add_feedback(self, position: int, vector: torch.Tensor,
                     strength: float = 1.0) -> RecurrentPassSpec:
        self.feedback.append(RecurrentFeedbackEntry(position, vector, strength))
        return self

    def validate(self, n_layers: int, seq_len: int, d_model: int) -> None:
        if self.depth < 1:
            raise InterventionError(f"recurrent depth must be >= 1, got {self.depth}")
        if self.loop_start > self.loop_end:
            raise InterventionError(f"loop_start ({self.loop_start}) > loop_end ({self.loop_end})")
        if self.loop_start < 0 or self.loop_end >= n_layers:
            raise InterventionError(f"loop {self.loop_start}..={self.loop_end} outside the "
                                    f"model's {n_layers} layers (0..{n_layers - 1})")
        for entry in self.feedback:
            if not 0 <= entry.position < seq_len:
                raise InterventionError(f"feedback position {entry.position} outside a sequence "
                                        f"of {seq_len} tokens")
            if entry.vector.reshape(-1).shape[0] != d_model:
                raise InterventionError(f"feedback vector has {entry.vector.numel()} elements, "
                                        f"the model's hidden size is {d_model}")

    def nudge(self, seq_len: int, d_model: int, device, dtype) -> torch.Tensor | None:
        """Dense [1,S,D] delta of all feedback entries (built in fp32, cast once)."""
        if not self.feedback:
            return None
        delta = torch.zeros(1, seq_len, d_model, device=device)
        for entry in self.feedback:
            delta[0, entry.position] += entry.strength * entry.vector.reshape(-1).float().to(device)
        return delta.to(dtype)


def forward_recurrent(model, input_ids, hooks: HookSpec | None, spec: RecurrentPassSpec,
                      *, attention_mask: torch.Tensor | None = None):
    """A forward in which layers loop_start..=loop_end run ``spec.depth`` times."""
    c = model.config
    ids = check_input_ids(input_ids, c.vocab_size, model.device)
    spec.validate(c.num_layers, ids.shape[1], c.hidden_size)
    runtime, cache = make_runtime(hooks, model.hook_points(), c.num_layers)
    ctx = model.make_context(ids, runtime, attention_mask, None)
    h = model.embed_tokens(ids, runtime)
    h = model.run_blocks(h, ctx, 0, spec.loop_start)
    loop_input = h
    nudge = spec.nudge(ids.shape[1], c.hidden_size, h.device, h.dtype)
    h = model.run_blocks(h, ctx, spec.loop_start, spec.loop_end + 1)
    for _ in range(spec.depth - 1):
        h = loop_input if spec.restart_from_input else h
        if nudge is not None:
            h = h + nudge
        h = model.run_blocks(h, ctx, spec.loop_start, spec.loop_end + 1)
    h = model.run_blocks(h, ctx, spec.loop_end + 1, c.num_layers)
    cache.set_output(model.head(h, runtime))
    return cache


def generate_recurrent(model, prompt_tokens: list[int], max_tokens: int, spec: RecurrentPassSpec,
                       *, temperature: float = 0.0, stop_tokens: tuple[int, ...] = (),
                       generator: torch.Generator | None = None) -> list[int]:
    """Greedy/temperature generation recomputing a recurrent forward each step; with
    ``spec.sustained`` every feedback entry is also applied at the current last position."""
    tokens = list(prompt_tokens)
    for _ in range(max_tokens):
        step = spec
        if spec.sustained and spec.feedback:
            last = len(tokens) - 1
            extra = [RecurrentFeedbackEntry(last, e.vector, e.strength) for e in spec.feedback]
            step = RecurrentPassSpec(spec.loop_start, spec.loop_end, spec.feedback + extra,
                                     spec.sustained, spec.depth, spec.restart_from_input)
        logits = forward_recurrent(model, [tokens], None, step).output()[0, -1]
        token = sample_token(logits, temperature, generator)
        if token in stop_tokens:
            break
        tokens.append(token)
    return tokens
