"""Knockout specs/masks, KL divergence, attention steering, calibration and dose-response,
each checked against an independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torch_mi as mi
from torch_mi.interp.dose import DOSE_LEVELS, DoseResponseCurve, SteeringCalibration, dose_response
from torch_mi.interp.knockout import (
    KnockoutSpec,
    create_knockout_mask,
    knockout_hooks,
    run_knockout,
)
from torch_mi.interp.results import kl_divergence
from torch_mi.interp.steering import (
    SteeringSpec,
    apply_steering,
    measure_attention_to_targets,
    run_steering,
)

NEG = float("-inf")


# ---- KL ------------------------------------------------------------------------------------
def test_kl_matches_torch_kl_div_and_a_float64_formula():
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(50, generator=g) * 3, torch.randn(50, generator=g) * 3
    expected = F.kl_div(F.log_softmax(q_logits.double(), -1), F.log_softmax(p_logits.double(), -1),
                        reduction="sum", log_target=True).item()
    assert kl_divergence(p_logits, q_logits) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    p, q = torch.softmax(p_logits.double(), -1), torch.softmax(q_logits.double(), -1)
    assert kl_divergence(p_logits, q_logits) == pytest.approx(float((p * (p / q).log()).sum()),
                                                              rel=1e-10)
    assert kl_divergence(p_logits, p_logits) == 0.0


def test_kl_rows_sum_mean_none():
    a, b = torch.randn(3, 10), torch.randn(3, 10)
    rows = kl_divergence(a, b, reduction="none")
    expected = torch.stack([torch.tensor(kl_divergence(a[i], b[i])) for i in range(3)])
    torch.testing.assert_close(rows, expected.double())
    assert kl_divergence(a, b) == pytest.approx(float(rows.sum()))
    assert kl_divergence(a, b, reduction="mean") == pytest.approx(float(rows.mean()))
    with pytest.raises(mi.InterventionError):
        kl_divergence(a, b[:, :5])


# ---- knockout specs and masks ---------------------------------------------------------------
def test_mask_of_the_seed_test_vector():
    mask = create_knockout_mask(KnockoutSpec().head(0).edge(2, 1), 2, 4)
    expected = torch.zeros(1, 2, 4, 4)
    expected[0, 0, 2, 1] = NEG
    assert torch.equal(mask, expected)


def test_sentinel_edges_expand_to_rows_and_columns():
    mask = create_knockout_mask(KnockoutSpec().from_position(3).to_position(0), 1, 4)
    expected = torch.zeros(4, 4)
    expected[3, :] = NEG
    expected[:, 0] = NEG
    assert torch.equal(mask[0, 0], expected)
    spec = KnockoutSpec().from_to_positions(2, [0, 1]).heads([1, 2])
    m = create_knockout_mask(spec, 3, 4)
    assert torch.isinf(m[0, 1:, 2, :2]).all() and not torch.isinf(m[0, 0]).any()


def test_spec_builders_and_validation():
    spec = KnockoutSpec().layer(3).layers([5, 3]).head(1).edge(4, 0)
    assert spec.applies_to_layer(5) and not spec.applies_to_layer(4)
    assert spec.applies_to_head(1) and not spec.applies_to_head(0)
    assert spec.max_from_pos() == 4 and spec.max_to_pos() == 0
    spec.validate(6, 2, 5)
    for bad, message in [(KnockoutSpec().layer(9).edge(1, 0), "out of range"),
                         (KnockoutSpec().layer_range(4, 2).edge(1, 0), "start must be <= end"),
                         (KnockoutSpec().head(7).edge(1, 0), "head"),
                         (KnockoutSpec().edge(9, 0), "position 9"),
                         (KnockoutSpec(), "no edges")]:
        with pytest.raises(mi.InterventionError, match=message):
            bad.validate(6, 2, 5)


def test_knockout_hooks_honour_the_layers_and_match_hand_built_masks(tiny_models, loaded):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids[:1]
    seq = ids.shape[1]
    spec = KnockoutSpec().layer(1).head(2).edge(seq - 1, 3)
    hooks = knockout_hooks(spec, model.num_layers, model.num_heads, seq)
    assert [str(p) for p, _ in hooks.interventions()] == ["blocks.1.attn.hook_scores"]
    manual = torch.zeros(1, model.num_heads, seq, seq)
    manual[0, 2, seq - 1, 3] = NEG
    by_hand = mi.HookSpec().intervene(mi.HookPoint.AttnScores(1), mi.Intervention.Knockout(manual))
    torch.testing.assert_close(model.forward(ids, hooks).output(),
                               model.forward(ids, by_hand).output(), atol=0, rtol=0)


def test_run_knockout_result(tiny_models, loaded):
    model, ids = loaded["gemma2"], tiny_models["gemma2"].input_ids[0]
    result = run_knockout(model, ids, KnockoutSpec().layer(1).edge(len(ids) - 1, 0))
    assert result.kl_divergence() > 0
    top = result.top_changed_tokens(5)
    assert len(top) == 5 and top[0][3] == max(t[3] for t in top)
    p, q = torch.softmax(result.baseline_logits.double(), -1), torch.softmax(
        result.ablated_logits.double(), -1)
    i = top[0][0]
    assert top[0][1:] == pytest.approx((float(p[i]), float(q[i]), float((p[i] - q[i]).abs())))
    assert result.logit_diff(i) == pytest.approx(
        float(result.baseline_logits[i] - result.ablated_logits[i]))
    with pytest.raises(mi.InterventionError):
        result.logit_diff(10_000)


# ---- steering ------------------------------------------------------------------------------
def uniform(h=1, s=4):
    return torch.full((1, h, s, s), 1.0 / s)


def test_scale_steering_seed_vector():
    out = apply_steering(uniform(), SteeringSpec.scale(2.0).edge(2, 1), 1, 4)
    torch.testing.assert_close(out[0, 0, 2], torch.tensor([0.2, 0.4, 0.2, 0.2]))
    torch.testing.assert_close(out[0, 0, [0, 1, 3]], uniform()[0, 0, [0, 1, 3]])


def test_set_value_steering_seed_vector():
    out = apply_steering(uniform(), SteeringSpec.set_value(0.5).edge(2, 1), 1, 4)
    torch.testing.assert_close(out[0, 0, 2], torch.tensor([1 / 6, 0.5, 1 / 6, 1 / 6]))


def test_steered_causal_rows_sum_to_one_and_keep_masked_cells_zero(tiny_models, loaded):
    model, ids = loaded["qwen2"], tiny_models["qwen2"].input_ids[:1]
    seq = ids.shape[1]
    pattern = model.forward(ids, mi.HookSpec().capture(mi.HookPoint.AttnPattern(0)))[
        mi.HookPoint.AttnPattern(0)]
    for spec in (SteeringSpec.scale(3.0).from_position(seq - 1),
                 SteeringSpec.set_value(0.3).edge(seq - 1, 0).edge(seq - 2, 1).head(1)):
        out = apply_steering(pattern, spec, model.num_heads, seq)
        torch.testing.assert_close(out.sum(-1), torch.ones(1, model.num_heads, seq))
        assert torch.equal(out.triu(1), torch.zeros_like(out))  # nothing leaks into the future
    pinned = apply_steering(pattern, SteeringSpec.set_value(0.3).edge(seq - 1, 0).head(1),
                            model.num_heads, seq)
    assert pinned[0, 1, seq - 1, 0] == pytest.approx(0.3)
    others = pattern[0, 1, seq - 1, 1:]
    torch.testing.assert_close(pinned[0, 1, seq - 1, 1:], others * 0.7 / others.sum())


def test_steering_validation():
    with pytest.raises(mi.InterventionError, match="scale must be >= 0"):
        SteeringSpec.scale(-1.0).edge(1, 0).validate(2, 2, 3)
    with pytest.raises(mi.InterventionError, match=r"\[0, 1\]"):
        SteeringSpec.set_value(1.5).edge(1, 0).validate(2, 2, 3)
    with pytest.raises(mi.InterventionError, match="does not knock out"):
        apply_steering(uniform(), SteeringSpec().edge(1, 0), 1, 4)
    with pytest.raises(mi.InterventionError, match="exceeds"):
        apply_steering(uniform(), SteeringSpec.set_value(0.6).edge(2, 0).edge(2, 1), 1, 4)
    spec = SteeringSpec.scale(2).edge(1, 0)
    assert spec.is_steering() and spec.is_prompt_only(3) and not spec.is_prompt_only(1)
    assert not SteeringSpec.scale(2).from_position(1).to_position(0).is_prompt_only(1)


def test_measure_attention_to_targets():
    attn = torch.rand(2, 3, 5, 5)
    expected = attn[:, :, 4, [0, 2]].mean().item()
    assert measure_attention_to_targets(attn, 4, [0, 2, 9]) == pytest.approx(expected)
    assert measure_attention_to_targets(attn, 4, [9]) == 0.0
    with pytest.raises(mi.InterventionError):
        measure_attention_to_targets(attn, 5, [0])


def test_attention_steering_run_changes_the_output(tiny_models, loaded):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids[0]
    result = run_steering(model, ids, SteeringSpec.scale(4.0).layer(0).edge(19, 0))
    assert result.kl_divergence() > 0
    assert result.steered_attention_mean > result.baseline_attention_mean
    assert result.attention_ratio() == pytest.approx(
        result.steered_attention_mean / result.baseline_attention_mean)


# ---- calibration and dose-response ----------------------------------------------------------
def test_calibration_seed_vector():
    cal = SteeringCalibration(0.09, 0.025, layer=8)
    assert cal.attention_ratio == pytest.approx(3.6)
    assert cal.scale_factor_to_source() == pytest.approx(3.6)
    assert cal.scale_factor_for_target(0.05) == pytest.approx(2.0)
    assert cal.dose_levels_absolute()[0] == pytest.approx((0.5, 0.0125))
    assert SteeringCalibration(0.1, 0.0, 0).attention_ratio == 0.0
    assert DOSE_LEVELS == (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)


def test_dose_curve_interpolation_seed_vector():
    curve = DoseResponseCurve("s", "c", 0, 0.025)
    for scale, level in [(1, 0.025), (2, 0.05), (4, 0.1)]:
        curve.add_point(scale, level, 0.0)
    assert curve.scale_for_target(0.075) == pytest.approx(3.0)
    assert curve.scale_for_target(0.0375) == pytest.approx(1.5)
    assert curve.scale_for_target(0.2) is None
    falling = DoseResponseCurve("s", "c", 0, 0.1)
    falling.add_point(1, 0.1, 0)
    falling.add_point(3, 0.05, 0)
    assert falling.scale_for_target(0.075) == pytest.approx(2.0)


def test_dose_response_on_a_model_is_monotonic(tiny_models, loaded):
    model, ids = loaded["mistral"], tiny_models["mistral"].input_ids[0, :8]
    curve, calibration = dose_response(model, ids)
    levels = [p.attention_level for p in curve.points]
    assert levels == sorted(levels)  # more dose, more attention on the edge
    unit = next(p for p in curve.points if p.scale == 1.0)
    assert unit.kl == pytest.approx(0.0, abs=1e-10)  # scale 1 is a no-op
    assert unit.attention_level == pytest.approx(curve.baseline_attention, rel=1e-6)
    assert calibration.source_baseline == pytest.approx(2 * curve.baseline_attention)
    target = curve.scale_for_target(calibration.source_baseline)
    assert target is None or 1.0 < target <= 6.0


# ---- residual steering vectors: absolute and relative scale ---------------------------------
def _hf_steered_logits(tiny, ids, vector, scale, relative, positions=None):
    """HF oracle: a forward hook on decoder layer 0 adds the steering vector to its output
    (= blocks.0.hook_resid_post), scaled by each position's residual norm if ``relative``."""
    hf = tiny.hf_copy()

    def hook(module, inputs, output):
        x = output[0] if isinstance(output, tuple) else output  # [B,S,D]
        step = vector * scale if not relative else (
            x.norm(dim=-1, keepdim=True) * vector / vector.norm() * scale)
        if positions is not None:
            keep = torch.zeros(x.shape[1], 1)
            keep[positions] = 1.0
            step = step * keep
        x = x + step
        return (x, *output[1:]) if isinstance(output, tuple) else x

    handle = hf.model.layers[0].register_forward_hook(hook)
    try:
        with torch.no_grad():
            return hf(ids).logits
    finally:
        handle.remove()


@pytest.mark.parametrize(("relative", "positions"), [(False, None), (True, None), (True, [1, 3])])
def test_steering_vector_scales_match_an_hf_hook(tiny_models, loaded, relative, positions):
    from torch_mi.interp.vectors import steering_vector_hooks

    tiny, model = tiny_models["llama"], loaded["llama"]
    ids = tiny.input_ids[:1]
    vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(3)) * 5
    hooks = steering_vector_hooks(vector, [0], scale=0.5, relative=relative, positions=positions)
    ours = model.forward(ids, hooks).output()
    expected = _hf_steered_logits(tiny, ids, vector, 0.5, relative, positions)
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    plain = model.forward(ids).output()
    assert (ours - plain).abs().max() > 1e-3  # the steering did something


def test_relative_steering_is_independent_of_the_vector_length(loaded):
    from torch_mi.interp.vectors import steering_vector_hooks

    model = loaded["llama"]
    ids = model.encode("Hello there")
    vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(4))
    runs = [model.forward(ids, steering_vector_hooks(vector * k, [0], scale=0.3,
                                                     relative=True)).output()
            for k in (0.01, 1.0, 86.0)]
    torch.testing.assert_close(runs[0], runs[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(runs[2], runs[1], atol=1e-5, rtol=1e-5)
    with pytest.raises(mi.InputError, match="relative steering needs a non-zero vector"):
        steering_vector_hooks(torch.zeros(model.hidden_size), [0], relative=True)
    with pytest.raises(mi.InputError, match="relative must be True or False"):
        steering_vector_hooks(vector, [0], relative="yes")
