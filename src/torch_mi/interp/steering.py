"""Post-softmax attention steering: rescale or pin the weight of chosen attention edges,
then renormalise the touched rows so every pattern row still sums to one.

The steered pattern is injected with ``Intervention.Replace`` at ``attn.hook_pattern``.
``SetValue`` pins targets to ``v`` and rescales the row's other weights *proportionally*,
so entries that were zero (masked keys) stay zero (docs/porting.md: attention steering).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import InterventionError
from ..hooks.interventions import Intervention
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..prompts import Prompt, prompt_ids
from .knockout import EdgeSelection, KnockoutSpec
from .results import LogitComparison

_EPS = 1e-10


def _finite(what: str, value: object) -> float:
    """A finite float; InterventionError for NaN, inf, strings and bools (a NaN scale would
    pass every range check and turn the patterns into NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InterventionError(f"{what} must be a number, got {type(value).__name__} "
                                f"{value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InterventionError(f"{what} must be finite, got {value!r:.40}")
    return number


@dataclass(frozen=True)
class InterventionType:
    """What steering does to the selected edges: Knockout, Scale(f) or SetValue(v)."""

    kind: str
    value: float = 0.0

    Knockout: ClassVar[InterventionType]

    @classmethod
    def Scale(cls, factor: float) -> InterventionType:
        return cls("Scale", _finite("steering scale", factor))

    @classmethod
    def SetValue(cls, value: float) -> InterventionType:
        return cls("SetValue", _finite("steering set-value", value))

    def __repr__(self) -> str:
        return "InterventionType.Knockout" if self.kind == "Knockout" else (
            f"InterventionType.{self.kind}({self.value})")


InterventionType.Knockout = InterventionType("Knockout")


class SteeringSpec(EdgeSelection):
    """Edges to steer and how (chainable builders shared with KnockoutSpec)."""

    def __init__(self, intervention_type: InterventionType = InterventionType.Knockout) -> None:
        super().__init__()
        self.intervention_type = intervention_type

    @classmethod
    def scale(cls, factor: float) -> SteeringSpec:
        return cls(InterventionType.Scale(factor))

    @classmethod
    def set_value(cls, value: float) -> SteeringSpec:
        return cls(InterventionType.SetValue(value))

    @classmethod
    def from_knockout(cls, spec: KnockoutSpec) -> SteeringSpec:
        steering = cls(InterventionType.Knockout)
        steering.layer_spec, steering.head_spec = spec.layer_spec, spec.head_spec
        steering.edges = list(spec.edges)
        return steering

    def is_knockout(self) -> bool:
        return self.intervention_type.kind == "Knockout"

    def is_steering(self) -> bool:
        return not self.is_knockout()

    def is_prompt_only(self, prompt_len: int) -> bool:
        """True if every edge starts inside the prompt (so generation steps are unaffected)."""
        return all(e.from_pos is not None and e.from_pos < prompt_len for e in self.edges)

    def validate(self, n_layers: int, n_heads: int, seq_len: int) -> None:
        super().validate(n_layers, n_heads, seq_len)
        kind, value = self.intervention_type.kind, self.intervention_type.value
        if kind == "Scale" and value < 0:
            raise InterventionError(f"steering scale must be >= 0, got {value}")
        if kind == "SetValue" and not 0.0 <= value <= 1.0:
            raise InterventionError(f"steering set-value must be in [0, 1], got {value}")

    def __repr__(self) -> str:
        return (f"SteeringSpec({self.intervention_type!r}, layers={self.layer_spec}, "
                f"heads={self.head_spec}, edges={[(e.from_pos, e.to_pos) for e in self.edges]})")


def apply_steering(attn: torch.Tensor, spec: SteeringSpec, n_heads: int,
                   seq_len: int) -> torch.Tensor:
    """Steered copy of a pattern [B,H,S,S]; touched rows are renormalised to sum 1."""
    if spec.is_knockout():
        raise InterventionError("apply_steering does not knock out: use a KnockoutSpec and "
                                "create_knockout_mask at attn.hook_scores")
    if attn.dim() != 4 or attn.shape[1:] != (n_heads, seq_len, seq_len):
        raise InterventionError(f"apply_steering expects [B, {n_heads}, {seq_len}, {seq_len}], "
                                f"got {list(attn.shape)}")
    cells = spec.cell_mask(n_heads, seq_len, attn.device)[None]  # [1,H,S,S]
    rows = cells.any(dim=-1, keepdim=True)  # [1,H,S,1] rows that change
    a = attn.float()
    if spec.intervention_type.kind == "Scale":
        steered = torch.where(cells, a * spec.intervention_type.value, a)
        total = steered.sum(-1, keepdim=True)
        renorm = torch.where(total > _EPS, steered / total.clamp_min(_EPS), steered)
    else:
        value = spec.intervention_type.value
        target_mass = cells.sum(-1, keepdim=True) * value  # [1,H,S,1]
        if bool((target_mass > 1.0 + 1e-6).any()):
            raise InterventionError(f"set-value {value} on several edges of one row exceeds a "
                                    f"total weight of 1")
        others = torch.where(cells, torch.zeros_like(a), a)
        other_sum = others.sum(-1, keepdim=True)
        factor = torch.where(other_sum > _EPS, (1.0 - target_mass) / other_sum.clamp_min(_EPS),
                             torch.zeros_like(other_sum))
        renorm = torch.where(cells, torch.full_like(a, value), others * factor)
    return torch.where(rows, renorm, a).to(attn.dtype)


def measure_attention_to_targets(attn: torch.Tensor, from_pos: int,
                                 to_positions: list[int]) -> float:
    """Mean of attn[b, h, from_pos, t] over batches, heads and valid targets t < S."""
    seq_len = attn.shape[-1]
    if not 0 <= from_pos < attn.shape[-2]:
        raise InterventionError(f"from position {from_pos} outside a sequence of {seq_len}")
    targets = [t for t in to_positions if 0 <= t < seq_len]
    if not targets:
        return 0.0
    return float(attn[:, :, from_pos, targets].float().mean())


class SteeringResult(LogitComparison):
    """Baseline vs steered logits (last position), with optional attention measurements."""

    def __init__(self, baseline_logits: torch.Tensor, steered_logits: torch.Tensor,
                 spec: SteeringSpec, baseline_attention_mean: float | None = None,
                 steered_attention_mean: float | None = None) -> None:
        super().__init__(baseline_logits, steered_logits)
        self.spec = spec
        self.baseline_attention_mean = baseline_attention_mean
        self.steered_attention_mean = steered_attention_mean

    @property
    def steered_logits(self) -> torch.Tensor:
        return self.other_logits

    def with_attention_measurements(self, baseline: float, steered: float) -> SteeringResult:
        self.baseline_attention_mean, self.steered_attention_mean = baseline, steered
        return self

    def attention_ratio(self) -> float | None:
        b, s = self.baseline_attention_mean, self.steered_attention_mean
        return None if b is None or s is None or b <= _EPS else s / b


def run_steering(model: LanguageModel, prompt: Prompt, spec: SteeringSpec) -> SteeringResult:
    """Steer the spec's edges at each of its layers; measure attention on the first edge."""
    ids = prompt_ids(model, prompt)
    seq_len = ids.shape[1]
    spec.validate(model.num_layers, model.num_heads, seq_len)
    layers = spec.layer_spec.resolve(model.num_layers)
    points = [HookPoint.AttnPattern(layer) for layer in layers]
    base = model.forward(ids, HookSpec().capture(*points))
    hooks, injected = HookSpec(), {}
    for point in points:
        injected[point] = apply_steering(base[point], spec, model.num_heads, seq_len)
        hooks.intervene(point, Intervention.Replace(injected[point]))
    steered = model.forward(ids, hooks, last_logits_only=True)
    edge = spec.edges[0]
    src = edge.from_pos if edge.from_pos is not None else seq_len - 1
    dst = [edge.to_pos] if edge.to_pos is not None else list(range(seq_len))

    def mean_over_layers(patterns) -> float:
        return sum(measure_attention_to_targets(patterns[p], src, dst) for p in points) / len(points)

    return SteeringResult(base.output()[0, -1], steered.output()[0, -1], spec,
                          mean_over_layers(base), mean_over_layers(injected))
