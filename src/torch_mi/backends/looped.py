"""Looped passes: run a range of layers several times in one forward, optionally nudging
the residual stream between passes (works on any backend with a :class:`BlockLoop`).

Pass k >= 2 starts from the output of pass k - 1 plus the feedback nudge, so every extra
pass matters; ``restart_from_input=True`` restarts every pass from the loop's input instead
(docs/porting.md: looped passes). Hooks fire on every visit; a captured point keeps its
last visit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import InterventionError
from ..hooks.cache import HookCache
from ..hooks.spec import HookSpec
from ..sampling import sample_token
from .inputs import check_input_ids
from .protocol import BlockLoop, MIBackend


@dataclass
class LoopFeedback:
    """Add ``strength * vector`` [D] at token ``position`` before each extra pass."""

    position: int
    vector: torch.Tensor
    strength: float = 1.0


@dataclass
class LoopSpec:
    """Layers ``loop_start..=loop_end`` run ``depth`` times (chainable builders)."""

    loop_start: int
    loop_end: int
    feedback: list[LoopFeedback] = field(default_factory=list)
    sustained: bool = False
    depth: int = 2
    restart_from_input: bool = False

    @classmethod
    def no_feedback(cls, loop_start: int, loop_end: int) -> LoopSpec:
        return cls(loop_start, loop_end)

    def with_sustained(self, sustained: bool = True) -> LoopSpec:
        self.sustained = sustained
        return self

    def with_depth(self, depth: int) -> LoopSpec:
        self.depth = depth
        return self

    def add_feedback(self, position: int, vector: torch.Tensor,
                     strength: float = 1.0) -> LoopSpec:
        self.feedback.append(LoopFeedback(position, vector, strength))
        return self

    def validate(self, n_layers: int, seq_len: int, d_model: int) -> None:
        for name in ("loop_start", "loop_end", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InterventionError(f"LoopSpec.{name} must be an int, got "
                                        f"{type(value).__name__} {value!r:.40}")
        if self.depth < 1:
            raise InterventionError(f"loop depth must be >= 1, got {self.depth}")
        if self.loop_start > self.loop_end:
            raise InterventionError(f"loop_start ({self.loop_start}) > loop_end ({self.loop_end})")
        if self.loop_start < 0 or self.loop_end >= n_layers:
            raise InterventionError(f"loop {self.loop_start}..={self.loop_end} outside the "
                                    f"model's {n_layers} layers (0..{n_layers - 1})")
        for entry in self.feedback:
            _check_feedback(entry)
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


def _check_feedback(entry: LoopFeedback) -> None:
    """InterventionError for a feedback entry that is not an int position, a finite float
    vector and a finite strength (a NaN nudge would silently poison every extra pass)."""
    if isinstance(entry.position, bool) or not isinstance(entry.position, int):
        raise InterventionError(f"feedback position must be an int, got {entry.position!r:.40}")
    vector = entry.vector
    if not isinstance(vector, torch.Tensor) or not vector.is_floating_point():
        raise InterventionError(f"feedback vector must be a float tensor [D], got "
                                f"{type(vector).__name__}")
    if not bool(torch.isfinite(vector).all()):
        raise InterventionError("feedback vector holds NaN or inf values")
    strength = entry.strength
    try:
        finite = isinstance(strength, (int, float)) and not isinstance(strength, bool) \
            and math.isfinite(strength)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise InterventionError(f"feedback strength must be a finite number, got "
                                f"{strength!r:.40}")


def _block_loop(model: MIBackend) -> BlockLoop:
    backend = getattr(model, "backend", model)  # an MIModel wraps its backend
    if not isinstance(backend, BlockLoop):
        raise InterventionError(f"looped passes need a backend that exposes its block loop "
                                f"(begin/run_blocks/finish); {type(backend).__name__} does not")
    return backend


def forward_looped(model: MIBackend, input_ids, hooks: HookSpec | None, spec: LoopSpec,
                   *, attention_mask: torch.Tensor | None = None) -> HookCache:
    """A forward in which layers ``loop_start..=loop_end`` run ``spec.depth`` times
    (``model``: an MIModel or a backend)."""
    loop = _block_loop(model)
    ids = check_input_ids(input_ids, model.vocab_size, model.device)
    spec.validate(model.num_layers, ids.shape[1], model.hidden_size)
    run, h = loop.begin(ids, hooks, attention_mask=attention_mask)
    h = loop.run_blocks(run, h, 0, spec.loop_start)
    loop_input = h
    nudge = spec.nudge(ids.shape[1], model.hidden_size, h.device, h.dtype)
    h = loop.run_blocks(run, h, spec.loop_start, spec.loop_end + 1)
    for _ in range(spec.depth - 1):
        h = loop_input if spec.restart_from_input else h
        if nudge is not None:
            h = h + nudge
        h = loop.run_blocks(run, h, spec.loop_start, spec.loop_end + 1)
    h = loop.run_blocks(run, h, spec.loop_end + 1, model.num_layers)
    return loop.finish(run, h)


def generate_looped(model: MIBackend, prompt_tokens: list[int], max_tokens: int,
                    spec: LoopSpec, *, temperature: float = 0.0,
                    stop_tokens: tuple[int, ...] = (),
                    generator: torch.Generator | None = None) -> list[int]:
    """Greedy/temperature generation recomputing a looped forward each step; with
    ``spec.sustained`` every feedback entry is also applied at the current last position."""
    tokens = list(prompt_tokens)
    for _ in range(max_tokens):
        step = spec
        if spec.sustained and spec.feedback:
            last = len(tokens) - 1
            extra = [LoopFeedback(last, e.vector, e.strength) for e in spec.feedback]
            step = LoopSpec(spec.loop_start, spec.loop_end, spec.feedback + extra,
                            spec.sustained, spec.depth, spec.restart_from_input)
        logits = forward_looped(model, [tokens], None, step).output()[0, -1]
        token = sample_token(logits, temperature, generator)
        if token in stop_tokens:
            break
        tokens.append(token)
    return tokens


# Alternative names of the two types (docs/porting.md: looped passes).
RecurrentPassSpec = LoopSpec
RecurrentFeedbackEntry = LoopFeedback
