"""Reliability catalogue: hostile hook points, specs and interventions.

Every case raises the exact error class (HookError for points and specs,
InterventionError for what an intervention carries or returns) at the place of the
mistake, with a message naming the point or argument.
"""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from torch_mi.hooks import ForwardCall, HookCache
from torch_mi.hooks.points import HookTypeError

HP = mi.HookPoint
IDS = [[5, 6, 7, 8, 9]]  # 5 positions


# ---- hook points and specs: refused when the spec is built --------------------------------
BUILD = [
    ("capture_empty_string", lambda: mi.HookSpec().capture(""), r"empty hook point string"),
    ("capture_blank_string", lambda: mi.HookSpec().capture("  \t"), r"empty hook point string"),
    ("capture_int", lambda: mi.HookSpec().capture(123), r"must be a HookPoint or its string.*got int 123"),
    ("capture_none", lambda: mi.HookSpec().capture(None), r"got NoneType None"),
    ("capture_bytes", lambda: mi.HookSpec().capture(b"hook_embed"), r"got bytes"),
    ("capture_list", lambda: mi.HookSpec().capture(["hook_embed"]), r"got list"),
    ("intervene_at_int", lambda: mi.HookSpec().intervene(7, mi.Intervention.Zero), r"got int 7"),
    ("parse_float", lambda: HP.parse(1.5), r"got float 1\.5"),
    ("unknown_variant", lambda: HP("ResidPots", 1), r"unknown hook variant 'ResidPots'"),
    ("spec_keep_grad_str", lambda: mi.HookSpec(keep_grad="yes"),
     r"HookSpec\(keep_grad=\.\.\.\) must be True or False"),
    ("spec_check_finite_int", lambda: mi.HookSpec(check_finite=1),
     r"HookSpec\(check_finite=\.\.\.\) must be True or False"),
    ("extend_with_dict", lambda: mi.HookSpec().extend({}), r"extend\(\) needs a HookSpec, got dict"),
    ("backend_spec_empty_name", lambda: mi.HookSpec().set_backend_spec("", 1),
     r"backend spec needs a non-empty string name"),
    ("stream_point_unknown",
     lambda: __import__("torch_mi.hooks.points", fromlist=["x"]).stream_point("resid", 0),
     r"unknown stream point 'resid'"),
]


@pytest.mark.parametrize(("build", "match"), [c[1:] for c in BUILD], ids=[c[0] for c in BUILD])
def test_bad_points_and_specs_are_hook_errors(build, match):
    with raises_exactly(mi.HookError, match=match):
        build()


# HookPoint constructors raise HookTypeError (a HookError and a TypeError), so code that
# caught TypeError from them before they were typed keeps working.
CONSTRUCTORS = [
    ("layer_as_string", lambda: HP.ResidPost("3"),
     r"HookPoint.ResidPost needs an integer layer, got str '3'"),
    ("layer_as_float", lambda: HP.ResidPost(1.0), r"HookPoint.ResidPost needs an integer layer, got float"),
    ("layer_as_bool", lambda: HP.ResidPost(True), r"HookPoint.ResidPost needs an integer layer, got bool"),
    ("layer_huge", lambda: HP.ResidPost(10 ** 5000),
     r"HookPoint.ResidPost: layer ~2\*\*16609 is out of range"),
    ("model_wide_with_layer", lambda: HP("Embed", 3), r"HookPoint.Embed has no layer, got 3"),
    ("custom_empty", lambda: HP.Custom(""), r"HookPoint.Custom needs a non-empty string, got ''"),
    ("custom_int", lambda: HP.Custom(5), r"HookPoint.Custom needs a non-empty string, got int"),
]


@pytest.mark.parametrize(("build", "match"), [c[1:] for c in CONSTRUCTORS],
                         ids=[c[0] for c in CONSTRUCTORS])
def test_bad_point_constructors_are_hook_type_errors(build, match):
    with raises_exactly(HookTypeError, match=match):
        build()


def test_type_errors_of_the_constructors_stay_type_errors():
    """Code that caught TypeError from HookPoint constructors keeps working."""
    with pytest.raises(TypeError):
        HP.ResidPost("3")
    assert issubclass(HookTypeError, mi.HookError)


def test_a_failed_capture_adds_nothing():
    spec = mi.HookSpec()
    with raises_exactly(mi.HookError):
        spec.capture("blocks.0.hook_resid_pre", "")
    assert spec.is_empty()


def test_comparing_a_point_with_an_empty_string_is_false_not_an_error():
    assert HP.Embed != "" and HP.ResidPost(0) != "   "


# ---- strings that parse to Custom points: refused by forward, before any work -----------
FORWARD_POINTS = [
    ("five_thousand_digits", "blocks." + "9" * 5000 + ".hook_resid_pre",
     r"unknown hook point 'blocks\.9+'\.\.\. \(5022 characters\)\. The layer number .* is not canonical"),
    ("arabic_indic_digit", "blocks.\u0661.hook_resid_pre",
     r"layer number '\u0661' is not canonical.*ASCII digits"),
    ("fullwidth_digit", "blocks.\uff11.hook_resid_pre", r"layer number '\uff11' is not canonical"),
    ("leading_zero", "blocks.01.hook_resid_pre", r"layer number '01' is not canonical.*no leading zeros"),
    ("plus_sign", "blocks.+1.hook_resid_pre", r"layer number '\+1' is not canonical.*no sign"),
    ("minus_sign", "blocks.-1.hook_resid_pre", r"layer number '-1' is not canonical"),
    ("ten_digits", "blocks.1000000000.hook_resid_pre", r"at most 9 digits"),
    ("empty_layer", "blocks..hook_resid_pre", r"layer number '' is not canonical"),
    ("layer_out_of_range", "blocks.2.hook_resid_pre", r"layer 2 is out of range; this model has 2 layers"),
    ("typo", "blocks.1.hook_resid_pots", r"Did you mean 'blocks\.1\.hook_resid_post'"),
    ("nul_character", "hook_embed\x00", r"unknown hook point 'hook_embed\\x00'"),
]


@pytest.mark.parametrize(("text", "match"), [c[1:] for c in FORWARD_POINTS],
                         ids=[c[0] for c in FORWARD_POINTS])
def test_non_canonical_hook_strings_are_refused_by_forward(loaded, text, match):
    point = HP.parse(text)
    assert point.is_custom or point.layer == 2  # never read as another layer
    with raises_exactly(mi.HookError, match=match):
        loaded["llama"].forward(IDS, mi.HookSpec().capture(text))


def test_another_backends_point_is_refused_by_a_transformer(loaded):
    """``blocks.0.rwkv.hook_state`` is a real point (of the RWKV backend, declared when
    torch_mi is imported): a transformer refuses it by name, before any work."""
    point = HP.parse("blocks.0.rwkv.hook_state")
    assert not point.is_custom and point.layer == 0 and point.variant == "RwkvState"
    with raises_exactly(mi.HookError, match=r"this model has no 'blocks\.0\.rwkv\.hook_state' "
                                            r"\(RwkvState is not computed by this backend\)"):
        loaded["llama"].forward(IDS, mi.HookSpec().capture("blocks.0.rwkv.hook_state"))


def test_negative_layer_constructor_is_out_of_range(loaded):
    with raises_exactly(mi.HookError, match=r"layer -1 is out of range"):
        loaded["llama"].forward(IDS, mi.HookSpec().capture(HP.ResidPost(-1)))


# ---- intervention payloads and results ----------------------------------------------------
def _apply(fn):
    return mi.HookSpec().intervene("blocks.0.hook_resid_pre", mi.Intervention.Apply(fn))


def _knockout(value: float) -> mi.HookSpec:
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 2] = value
    return mi.HookSpec().intervene(HP.AttnScores(0), mi.Intervention.Knockout(mask))


RESULT = [
    ("apply_float64", lambda: _apply(lambda t, p: t.double()),
     r"Intervention.Apply\(.*\) at blocks.0.hook_resid_pre: returned dtype torch.float64, "
     r"expected torch.float32"),
    ("apply_float16", lambda: _apply(lambda t, p: t.half()),
     r"returned dtype torch.float16, expected torch.float32"),
    ("apply_other_device", lambda: _apply(lambda t, p: t.to("meta")),
     r"at blocks.0.hook_resid_pre: returned a tensor on meta, expected cpu"),
    ("apply_wrong_shape", lambda: _apply(lambda t, p: t[:, :-1]),
     r"at blocks.0.hook_resid_pre: returned shape \[1, 4, 64\], expected \[1, 5, 64\]"),
    ("apply_list", lambda: _apply(lambda t, p: t.tolist()), r"at blocks.0.hook_resid_pre: returned list"),
    ("apply_none", lambda: _apply(lambda t, p: None), r"at blocks.0.hook_resid_pre: returned NoneType"),
    ("replace_nan", lambda: mi.HookSpec().intervene(HP.ResidPost(0), mi.Intervention.Replace(
        torch.full((64,), float("nan")))),
         r"Intervention.Replace at blocks.0.hook_resid_post: the payload holds 64 NaN/inf"),
    ("add_inf", lambda: mi.HookSpec().intervene(HP.ResidPost(0), mi.Intervention.Add(
        torch.tensor([float("inf")] + [0.0] * 63))),
         r"Intervention.Add at blocks.0.hook_resid_post:.*value inf"),
    ("add_float64_overflows_float32", lambda: mi.HookSpec().intervene(HP.ResidPost(0), mi.Intervention.Add(
        torch.full((64,), 1e300, dtype=torch.float64))),
         r"Intervention.Add at blocks.0.hook_resid_post:.*overflow"),
    ("add_neg_inf_outside_scores", lambda: mi.HookSpec().intervene(HP.MlpOut(1), mi.Intervention.Add(
        torch.full((64,), float("-inf")))),
         r"Intervention.Add at blocks.1.hook_mlp_out:.*only finite values"),
    ("add_wrong_width",
     lambda: mi.HookSpec().intervene(HP.ResidPost(0), mi.Intervention.Add(torch.zeros(63))),
     r"Intervention.Add at blocks.0.hook_resid_post: payload of shape \[63\] does not fit"),
    ("knockout_at_resid", lambda: mi.HookSpec().intervene(HP.ResidPost(0), mi.Intervention.Knockout(
        torch.zeros(1))),
         r"Intervention.Knockout at blocks.0.hook_resid_post: knockout masks act on pre-softmax"),
]


@pytest.mark.parametrize(("spec", "match"), [c[1:] for c in RESULT], ids=[c[0] for c in RESULT])
def test_bad_intervention_results_are_reported_at_their_hook(loaded, spec, match):
    with raises_exactly(mi.InterventionError, match=match):
        loaded["llama"].forward(IDS, spec())


CONSTRUCT = [
    ("knockout_pos_inf", lambda: _knockout(float("inf")),
     r"Intervention.Knockout: the payload holds 5 NaN/inf.*value inf.*only finite values and -inf"),
    ("knockout_nan", lambda: _knockout(float("nan")),
     r"Intervention.Knockout: the payload holds 5 NaN/inf.*value nan"),
    ("knockout_int_mask", lambda: mi.Intervention.Knockout(torch.zeros(1, 1, 5, 5, dtype=torch.long)),
     r"Intervention.Knockout: the mask must be floating point.*torch.int64"),
    ("knockout_not_tensor", lambda: mi.Intervention.Knockout([[0.0]]),
     r"Intervention.Knockout needs a torch.Tensor, got list"),
    ("scale_nan", lambda: mi.Intervention.Scale(float("nan")),
     r"Intervention.Scale needs a finite factor, got nan"),
    ("scale_inf", lambda: mi.Intervention.Scale(float("inf")),
     r"Intervention.Scale needs a finite factor, got inf"),
    ("scale_huge_int", lambda: mi.Intervention.Scale(10 ** 400), r"Intervention.Scale needs a finite factor"),
    ("scale_string", lambda: mi.Intervention.Scale("2"), r"Intervention.Scale needs a number, got '2'"),
    ("apply_not_callable", lambda: mi.Intervention.Apply(3), r"Intervention.Apply needs a callable, got 3"),
    ("intervene_with_string", lambda: mi.HookSpec().intervene("hook_embed", "zero"),
     r"intervene\('hook_embed', \.\.\.\) needs an Intervention.*got str"),
]


@pytest.mark.parametrize(("build", "match"), [c[1:] for c in CONSTRUCT], ids=[c[0] for c in CONSTRUCT])
def test_bad_interventions_are_refused_when_built(build, match):
    with raises_exactly(mi.InterventionError, match=match):
        build()


def test_knockout_value_that_overflows_float16_is_refused_after_the_cast(loaded):
    """1e30 is finite in float32 but +inf in float16: checked against the scores' dtype."""
    knockout = mi.Intervention.Knockout(torch.full((1, 1, 5, 5), 1e30))
    scores = torch.zeros(1, 4, 5, 5, dtype=torch.float16)
    call = ForwardCall(HookCache(), keep_grad=False)
    with raises_exactly(mi.InterventionError,
                       match=r"at blocks.0.attn.hook_scores: .*torch.float16.*overflow"):
        knockout.apply(scores, HP.AttnScores(0), call)


def test_knockout_with_neg_inf_never_produces_nan(loaded):
    """-inf (even a whole row) is the allowed knockout value: finite logits, zero weight."""
    mask = torch.zeros(1, 1, 5, 5)
    mask[..., 4, :] = float("-inf")  # the last query sees nothing
    spec = (mi.HookSpec().capture(HP.AttnPattern(0))
            .intervene(HP.AttnScores(0), mi.Intervention.Knockout(mask)))
    cache = loaded["llama"].forward(IDS, spec)
    assert torch.isfinite(cache.output()).all()
    assert torch.equal(cache[HP.AttnPattern(0)][0, :, 4], torch.zeros(4, 5))


def test_user_exceptions_inside_apply_reach_the_caller_unchanged(loaded):
    class Stop(Exception):
        """A user's own exception, raised to stop a forward early."""

    def stop(t, p):
        raise Stop("early exit")

    with pytest.raises(Stop, match="early exit"):
        loaded["llama"].forward(IDS, _apply(stop))
