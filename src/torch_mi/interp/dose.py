"""Steering calibration and dose-response curves: scale one attention edge by a series of
doses and record, per dose, the attention it gets, the KL from the baseline output and a
target token's logit change."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hooks.interventions import Intervention
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..prompts import Prompt, prompt_ids
from .results import kl_divergence
from .steering import SteeringSpec, apply_steering, measure_attention_to_targets

DOSE_LEVELS: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)
_EPS = 1e-10


@dataclass
class SteeringCalibration:
    """Attention baselines of a source and a target condition at one layer."""

    source_baseline: float
    target_baseline: float
    layer: int
    n_source: int = 1
    n_target: int = 1
    recommended_target: float | None = None

    def __post_init__(self) -> None:
        if self.recommended_target is None:
            self.recommended_target = self.source_baseline

    @property
    def attention_ratio(self) -> float:
        return self.source_baseline / self.target_baseline if self.target_baseline > _EPS else 0.0

    def with_target(self, target: float) -> SteeringCalibration:
        self.recommended_target = target
        return self

    def scale_factor_for_target(self, target: float) -> float:
        return target / self.target_baseline if self.target_baseline > _EPS else 1.0

    def scale_factor_to_source(self) -> float:
        return self.scale_factor_for_target(self.source_baseline)

    def dose_levels_absolute(self) -> list[tuple[float, float]]:
        return [(dose, self.target_baseline * dose) for dose in DOSE_LEVELS]


@dataclass
class DoseResponsePoint:
    scale: float
    attention_level: float
    kl: float
    logit_diff: float | None = None


@dataclass
class DoseResponseCurve:
    sample_id: str
    condition: str
    layer: int
    baseline_attention: float
    points: list[DoseResponsePoint] = field(default_factory=list)

    def add_point(self, scale: float, attention_level: float, kl: float,
                  logit_diff: float | None = None) -> None:
        self.points.append(DoseResponsePoint(scale, attention_level, kl, logit_diff))

    def scale_for_target(self, target: float) -> float | None:
        """Linear interpolation of the scale reaching ``target`` attention, from the first
        consecutive pair of points that brackets it; None if out of range."""
        for a, b in zip(self.points, self.points[1:], strict=False):
            lo, hi = sorted((a.attention_level, b.attention_level))
            span = b.attention_level - a.attention_level
            if lo <= target <= hi and abs(span) > _EPS:
                t = (target - a.attention_level) / span
                return a.scale + t * (b.scale - a.scale)
        return None

    def to_dict(self) -> dict:
        return {"sample_id": self.sample_id, "condition": self.condition, "layer": self.layer,
                "baseline_attention": self.baseline_attention,
                "points": [vars(p) for p in self.points]}


def dose_response(model: LanguageModel, prompt: Prompt, *, layer: int | None = None,
                  edge: tuple[int, int] | None = None,
                  doses: tuple[float, ...] = DOSE_LEVELS,
                  target_token: str | None = None) -> tuple[DoseResponseCurve, SteeringCalibration]:
    """Scale one attention edge (default last -> first, middle layer) by each dose, all heads;
    record head-mean attention on the edge, KL vs baseline and the target's logit diff."""
    ids = prompt_ids(model, prompt)
    seq_len = ids.shape[1]
    layer = model.num_layers // 2 if layer is None else layer
    src, dst = edge if edge is not None else (seq_len - 1, 0)
    point = HookPoint.AttnPattern(layer)
    base = model.forward(ids, HookSpec().capture(point))
    base_logits = base.output()[0, -1]
    baseline = measure_attention_to_targets(base[point], src, [dst])
    calibration = SteeringCalibration(2 * baseline, baseline, layer)
    token_id = None
    if target_token is not None:
        token_id = model.require_tokenizer().find_token_id(target_token.strip())
    label = prompt if isinstance(prompt, str) else "ids"
    curve = DoseResponseCurve(label, f"scale edge ({src},{dst})", layer, baseline)
    for dose in doses:
        spec = SteeringSpec.scale(dose).layer(layer).edge(src, dst)
        spec.validate(model.num_layers, model.num_heads, seq_len)
        steered_pattern = apply_steering(base[point], spec, model.num_heads, seq_len)
        hooks = HookSpec().intervene(point, Intervention.Replace(steered_pattern))
        logits = model.forward(ids, hooks, last_logits_only=True).output()[0, -1]
        diff = None if token_id is None else float(base_logits[token_id] - logits[token_id])
        curve.add_point(dose, measure_attention_to_targets(steered_pattern, src, [dst]),
                        kl_divergence(base_logits, logits), diff)
    return curve, calibration
