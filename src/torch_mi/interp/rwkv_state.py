"""RWKV state knockout and steering experiments: baseline vs intervened next-token logits.

The specs (:class:`~torch_mi.hooks.StateKnockoutSpec`, :class:`~torch_mi.hooks.StateSteeringSpec`)
travel on the HookSpec as backend specs; only a recurrent backend (RWKV) honours them, and any
other model raises HookError naming the entry. Semantics (inventory §3.6): the ``kᵀv`` write
of the listed positions into the WKV state of the listed layers is dropped (knockout) or
scaled (steering); decay and RWKV-7's rank-1 term still apply, RWKV-6's bonus ``u`` is
untouched, and a knockout wins over steering for every layer it targets.

Results compare the logits at the last position ([V]): ``kl_divergence()``,
``top_changed_tokens(k)``, ``logit_diff(token)`` and ``probability_shift(token)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InterventionError
from ..hooks.spec import HookSpec
from ..hooks.state import StateKnockoutSpec, StateSteeringSpec
from ..model import LanguageModel
from ..prompts import Prompt, prompt_rows
from .results import BatchComparison, LogitComparison, kl_divergence


class StateAblationResult(LogitComparison):
    """Baseline vs state-knocked-out logits [V] at the last position, with the spec."""

    def __init__(self, baseline_logits: torch.Tensor, ablated_logits: torch.Tensor,
                 spec: StateKnockoutSpec) -> None:
        super().__init__(baseline_logits, ablated_logits)
        self.spec = spec

    @property
    def ablated_logits(self) -> torch.Tensor:
        return self.other_logits

    def __repr__(self) -> str:
        return f"StateAblationResult(kl={self.kl_divergence():.6g}, spec={self.spec!r})"


class StateSteeringResult(LogitComparison):
    """Baseline vs state-steered logits [V] at the last position, with the spec."""

    def __init__(self, baseline_logits: torch.Tensor, steered_logits: torch.Tensor,
                 spec: StateSteeringSpec) -> None:
        super().__init__(baseline_logits, steered_logits)
        self.spec = spec

    @property
    def steered_logits(self) -> torch.Tensor:
        return self.other_logits

    def __repr__(self) -> str:
        return f"StateSteeringResult(kl={self.kl_divergence():.6g}, spec={self.spec!r})"


def _check_spec(spec: object, kind: type) -> None:
    if not isinstance(spec, kind):
        raise InterventionError(f"expected a {kind.__name__}, got {type(spec).__name__}")


def _rows(model: LanguageModel, prompt: Prompt | Sequence[Prompt]
          ) -> tuple[list[list[int]], bool]:
    rows, single = prompt_rows(model, prompt)
    if any(not row for row in rows):
        raise InterventionError("a prompt encodes to no tokens; give at least one token")
    return rows, single


def _last_logits(model: LanguageModel, row: list[int], hooks: HookSpec | None) -> torch.Tensor:
    ids = torch.tensor([row], dtype=torch.long, device=model.device)
    return model.forward(ids, hooks, last_logits_only=True).output()[0, -1]  # [V]


def _run(model: LanguageModel, prompt: Prompt | Sequence[Prompt], spec, result: type,
         attach: str):
    rows, single = _rows(model, prompt)
    for row in rows:  # every prompt first: a bad spec fails before any forward
        spec.validate(model.num_layers, len(row))
    hooks = getattr(HookSpec(), attach)(spec)
    results = []
    for row in rows:  # one prompt at a time: RWKV has no padded batches
        intervened = _last_logits(model, row, hooks)  # a non-recurrent model refuses here
        results.append(result(_last_logits(model, row, None), intervened, spec))
    return results[0] if single else BatchComparison(results)


def run_state_knockout(model: LanguageModel, prompt: Prompt | Sequence[Prompt],
                       spec: StateKnockoutSpec) -> StateAblationResult | BatchComparison:
    """Baseline and state-knocked-out forwards of a prompt (text or ids) on an RWKV model.

    Positions count in the prompt's tokens. A list of prompts runs one by one and returns a
    BatchComparison of per-prompt results. InterventionError for out-of-range positions or
    layers (before any forward); HookError if the model has no recurrent state."""
    _check_spec(spec, StateKnockoutSpec)
    return _run(model, prompt, spec, StateAblationResult, "set_state_knockout")


def run_state_steering(model: LanguageModel, prompt: Prompt | Sequence[Prompt],
                       spec: StateSteeringSpec) -> StateSteeringResult | BatchComparison:
    """Baseline and state-steered forwards (the listed positions' state writes scaled by
    ``spec.scale``); same conventions as :func:`run_state_knockout`."""
    _check_spec(spec, StateSteeringSpec)
    return _run(model, prompt, spec, StateSteeringResult, "set_state_steering")


def state_knockout_per_layer(model: LanguageModel, prompt: Prompt,
                             positions: Sequence[int]) -> torch.Tensor:
    """KL(baseline || knocked out) [L] at the last position when ``positions`` are knocked
    out of one layer's state at a time (the per-layer effect profile)."""
    rows, single = _rows(model, prompt)
    if not single:
        raise InterventionError("state_knockout_per_layer takes one prompt, got a list")
    specs = [StateKnockoutSpec().positions(positions).layer(layer)
             for layer in range(model.num_layers)]
    for spec in specs:
        spec.validate(model.num_layers, len(rows[0]))
    base = _last_logits(model, rows[0], None)
    kls = [kl_divergence(base, _last_logits(model, rows[0],
                                            HookSpec().set_state_knockout(spec)))
           for spec in specs]
    return torch.tensor(kls, dtype=torch.float64)
