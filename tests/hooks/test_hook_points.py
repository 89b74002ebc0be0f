"""HookPoint strings, aliases and constructors; HookSpec and HookCache bookkeeping."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.hooks.points import point_kinds

HP = mi.HookPoint


LAYER_KINDS = {v: k for v, k in point_kinds().items() if k.per_layer}
GLOBAL_KINDS = {v: k for v, k in point_kinds().items() if not k.per_layer}


@pytest.mark.parametrize("variant", sorted(LAYER_KINDS))
def test_every_layer_variant_round_trips(variant):
    point = getattr(HP, variant)(7)
    assert str(point) == LAYER_KINDS[variant].template.format(layer=7)
    assert HP.parse(str(point)) == point
    assert hash(HP.parse(str(point))) == hash(point)
    assert point.layer == 7 and point.variant == variant


@pytest.mark.parametrize("variant", sorted(GLOBAL_KINDS))
def test_every_global_variant_round_trips(variant):
    point = getattr(HP, variant)
    assert HP.parse(str(point)) is point
    assert point.layer is None


def test_seed_strings():
    assert str(HP.AttnPattern(5)) == "blocks.5.attn.hook_pattern"
    assert str(HP.AttnScores(0)) == "blocks.0.attn.hook_scores"
    # The seed's MlpPre/MlpPost keep their meaning under strings no TL point uses.
    assert str(HP.MlpPre(2)) == "blocks.2.mlp.hook_in"
    assert str(HP.MlpPost(2)) == "blocks.2.mlp.hook_out"
    assert str(HP.Embed) == "hook_embed" and str(HP.FinalNorm) == "hook_final_norm"
    assert repr(HP.ResidPost(3)) == "HookPoint.ResidPost(3)"


def test_transformerlens_strings_parse_to_the_tl_meaning():
    # Pre-gain normalised inputs, not the norm outputs.
    assert HP.parse("ln_final.hook_normalized") == HP.LnFinalNormalized != HP.FinalNorm
    assert HP.parse("blocks.4.ln2.hook_normalized") == HP.Ln2Normalized(4) != HP.MlpPre(4)
    assert HP.parse("blocks.4.ln1.hook_normalized") == HP.Ln1Normalized(4) != HP.Ln1Out(4)
    # TL's MLP points are d_mlp wide: gate pre-activation, up projection, neurons.
    assert HP.parse("blocks.4.mlp.hook_pre") == HP.MlpPreAct(4) != HP.MlpPre(4)
    assert HP.parse("blocks.4.mlp.hook_pre_linear") == HP.MlpPreLinear(4)
    assert HP.parse("blocks.4.mlp.hook_post") == HP.MlpHidden(4) != HP.MlpPost(4)
    # Exact equivalents.
    assert HP.parse("blocks.4.mlp.hook_hidden") == HP.MlpHidden(4)
    assert HP.parse("unembed.hook_in") == HP.FinalNorm
    assert HP.parse("blocks.4.attn.hook_attn_scores") == HP.AttnScoresMasked(4) != HP.AttnScores(4)


def test_unknown_strings_parse_to_custom_points():
    point = HP.parse("some.unknown.hook")
    assert point.is_custom and point == HP.Custom("some.unknown.hook")
    assert HP.parse("blocks.2.hook_resid_pots").is_custom
    assert str(point) == "some.unknown.hook"


def test_points_compare_with_strings_and_sort_in_model_order():
    assert HP.ResidPost(1) == "blocks.1.hook_resid_post"
    assert HP.ResidPost(1) != HP.ResidPost(2)
    ordered = sorted([HP.FinalNorm, HP.ResidPost(1), HP.Embed, HP.ResidPre(0)])
    assert ordered[0] == HP.Embed and ordered[-1] == HP.FinalNorm


def test_bad_constructor_arguments_raise():
    with pytest.raises(TypeError):
        HP.ResidPost("3")
    with pytest.raises(TypeError):
        HP.Custom("")
    with pytest.raises(AttributeError):
        HP.Embed.layer = 3


def test_hook_spec_builders_and_queries():
    t = torch.zeros(1)
    spec = (mi.HookSpec().capture("blocks.0.hook_resid_post", HP.AttnPattern(1))
            .intervene(HP.ResidPost(0), mi.Intervention.Add(t))
            .intervene("blocks.0.hook_resid_post", mi.Intervention.Zero))
    assert not spec.is_empty()
    assert spec.num_captures() == 2 and spec.num_interventions() == 2
    assert spec.is_captured(HP.ResidPost(0)) and spec.is_captured("blocks.1.attn.hook_pattern")
    assert spec.has_intervention_at("blocks.0.hook_resid_post")
    assert not spec.has_intervention_at(HP.AttnPattern(1))
    kinds = [type(iv).__name__ for iv in spec.interventions_at(HP.ResidPost(0))]
    assert kinds == ["Add", "Zero"]
    assert mi.HookSpec().is_empty()
    assert not mi.HookSpec().set_state_knockout(mi.StateKnockoutSpec().position(0)).is_empty()


def test_hook_spec_extend_keeps_order_and_state_specs():
    a = mi.HookSpec().capture(HP.Embed).intervene(HP.Embed, mi.Intervention.Scale(2.0))
    knock = mi.StateKnockoutSpec().position(1)
    b = (mi.HookSpec().capture(HP.FinalNorm).intervene(HP.Embed, mi.Intervention.Zero)
         .set_state_knockout(knock))
    a.extend(b)
    assert a.captures() == [HP.Embed, HP.FinalNorm]
    assert [type(iv).__name__ for iv in a.interventions_at(HP.Embed)] == ["Scale", "Zero"]
    assert a.state_knockout is knock


def test_hook_cache_access_by_point_and_string():
    cache = mi.HookCache(torch.ones(1, 2, 3))
    value = torch.arange(4.0)
    cache.store(HP.ResidPost(0), value)
    assert cache["blocks.0.hook_resid_post"] is value
    assert cache.require(HP.ResidPost(0)) is value
    assert cache.get("blocks.9.hook_resid_post") is None
    assert "blocks.0.hook_resid_post" in cache and HP.Embed not in cache
    assert cache.num_captures() == 1 and len(cache) == 1 and list(cache) == [HP.ResidPost(0)]
    assert cache.output().shape == (1, 2, 3)
    with pytest.raises(mi.HookError, match="was not captured"):
        cache.require(HP.ResidPost(1))
    with pytest.raises(mi.HookError, match="Did you mean 'blocks.0.hook_resid_post'"):
        cache["blocks.0.hook_resid_pos"]


def test_intervention_constructors_validate_their_payload():
    with pytest.raises(mi.InterventionError):
        mi.Intervention.Add([1.0, 2.0])
    with pytest.raises(mi.InterventionError):
        mi.Intervention.Scale("2")
    with pytest.raises(mi.InterventionError):
        mi.Intervention.Apply(3)
    with pytest.raises(mi.InterventionError):
        mi.HookSpec().intervene(HP.Embed, "zero")
    assert repr(mi.Intervention.Zero) == "Intervention.Zero"
