"""A splice's internals are hook points of their own: ``HookSpec.capture`` and
``HookSpec.intervene`` accept ``f"{hook}.hook_sae_*"`` while a splice at ``hook`` is in the
spec (and nowhere else). Oracles: the SAE formulas by hand (plain Replace of tensors
computed from them) and the ``edits=`` / ``capture=`` paths."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.dictionaries.clt_files import write_clt
from tests.dictionaries.sae_files import hand_encode, hand_recons, write_saelens
from torch_mi.dictionaries import (
    SPLICE_NAMES,
    CltFeatureId,
    CrossLayerTranscoder,
    FeatureEdit,
    SparseAutoencoder,
    splice,
    splice_point,
)
from torch_mi.errors import HookError
from torch_mi.hooks import NO_HOOKS, make_runtime
from torch_mi.hooks.cache import HookCache
from torch_mi.hooks.call import ForwardCall

HOOK = "blocks.1.hook_resid_post"
POST = splice_point(HOOK, "hook_sae_acts_post")
ATOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def sae_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("saes_points")
    t = write_saelens(root / "resid", HOOK)
    return SparseAutoencoder.from_local(root / "resid"), t


def _logits(model, ids, spec=None):
    with torch.no_grad():
        return model.forward(ids, spec).output()


def test_capture_through_the_spec_equals_the_capture_option(loaded, tiny_models, sae_setup):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, t = sae_setup
    names = [splice_point(HOOK, n) for n in SPLICE_NAMES]
    by_spec = model.forward(ids, splice(mi.HookSpec().capture(HOOK), sae,
                                        use_error_term=True).capture(*names))
    by_option = model.forward(ids, splice(mi.HookSpec(), sae, use_error_term=True, capture=True))
    for name in names:
        torch.testing.assert_close(by_spec[name], by_option[name], rtol=0, atol=0)
    x = by_spec[HOOK]
    torch.testing.assert_close(by_spec[POST], hand_encode(t, x), **ATOL)
    torch.testing.assert_close(by_spec[splice_point(HOOK, "hook_sae_recons")],
                               hand_recons(t, x), **ATOL)


@pytest.mark.parametrize("use_error_term", [False, True])
def test_zero_at_acts_post_ablates_every_feature(loaded, tiny_models, sae_setup, use_error_term):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, t = sae_setup
    got = _logits(model, ids, splice(mi.HookSpec(), sae, use_error_term=use_error_term)
                  .intervene(POST, mi.Intervention.Zero))
    everything = FeatureEdit.ablate(range(sae.d_sae))
    edits = _logits(model, ids, splice(mi.HookSpec(), sae, use_error_term=use_error_term,
                                       edits=[everything]))
    torch.testing.assert_close(got, edits, **ATOL)
    # Hand oracle: no features -> b_dec (+ the clean error x - recons(x)).
    x = model.forward(ids, mi.HookSpec().capture(HOOK))[HOOK]
    replaced = t["b_dec"].expand_as(x).clone()
    if use_error_term:
        replaced = replaced + x - hand_recons(t, x)
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Replace(replaced)))
    torch.testing.assert_close(got, oracle, **ATOL)
    assert (got - _logits(model, ids)).abs().max() > 1e-3


def test_scale_at_acts_post_equals_scaling_every_feature(loaded, tiny_models, sae_setup):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, t = sae_setup
    spec = splice(mi.HookSpec(), sae, use_error_term=True).intervene(POST, mi.Intervention.Scale(2.0))
    got = model.forward(ids, spec.capture(POST, HOOK))
    edits = _logits(model, ids, splice(mi.HookSpec(), sae, use_error_term=True,
                                       edits=[FeatureEdit.scale(range(sae.d_sae), 2.0)]))
    torch.testing.assert_close(got.output(), edits, **ATOL)
    x = got[HOOK]
    torch.testing.assert_close(got[POST], hand_encode(t, x), **ATOL)   # captured before Scale
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Replace(
        x + hand_encode(t, x) @ t["W_dec"])))                           # error term: + 1x acts
    torch.testing.assert_close(got.output(), oracle, **ATOL)


def test_interventions_upstream_and_downstream_of_the_features(loaded, tiny_models, sae_setup):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, t = sae_setup
    x = model.forward(ids, mi.HookSpec().capture(HOOK))[HOOK]
    # hook_sae_input: the SAE encodes the edited input (no error term: output = recons).
    half = _logits(model, ids, splice(mi.HookSpec(), sae).intervene(
        splice_point(HOOK, "hook_sae_input"), mi.Intervention.Scale(0.5)))
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Replace(
        hand_recons(t, 0.5 * x))))
    torch.testing.assert_close(half, oracle, **ATOL)
    # hook_sae_acts_pre pushed far below zero: every ReLU feature is off.
    off = _logits(model, ids, splice(mi.HookSpec(), sae).intervene(
        splice_point(HOOK, "hook_sae_acts_pre"), mi.Intervention.Add(torch.tensor(-1e4))))
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Replace(
        t["b_dec"].expand_as(x).clone())))
    torch.testing.assert_close(off, oracle, **ATOL)
    # hook_sae_output replaced: that is what the model gets.
    out = _logits(model, ids, splice(mi.HookSpec(), sae).intervene(
        splice_point(HOOK, "hook_sae_output"), mi.Intervention.Replace(x)))
    torch.testing.assert_close(out, _logits(model, ids), **ATOL)


def test_gradient_reaches_the_features(loaded, tiny_models, sae_setup):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, _ = sae_setup
    cache = model.forward(ids, splice(mi.HookSpec(), sae, use_error_term=True).capture_grad(POST))
    cache.output().sum().backward()
    grad = cache.grad(POST)
    assert grad.shape == (*ids.shape, sae.d_sae) and grad.abs().max() > 0


def test_unknown_or_unspliced_internal_is_a_hook_error(loaded, tiny_models, sae_setup):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, _ = sae_setup
    nope = splice_point(HOOK, "hook_sae_acts_pots")
    with pytest.raises(HookError, match=r"Did you mean.*hook_sae_acts_post"):
        model.forward(ids, splice(mi.HookSpec(), sae).capture(nope))
    with pytest.raises(HookError, match=r"provide: hook_sae_acts_post"):
        model.forward(ids, splice(mi.HookSpec(), sae).capture(splice_point(HOOK, "hook_sae_nope")))
    for spec in (mi.HookSpec().capture(POST),
                 mi.HookSpec().intervene(POST, mi.Intervention.Zero),
                 # a splice at another hook provides its own internals only
                 mi.HookSpec().intervene("blocks.0.hook_resid_post", mi.Intervention.Zero)
                 .capture(POST)):
        with pytest.raises(HookError, match=r"Did you mean.*no intervention at it provides"):
            model.forward(ids, spec)
    spec = mi.HookSpec().intervene(POST, mi.Intervention.Zero)
    with pytest.raises(HookError):
        model.forward(ids, spec)
    assert spec.num_interventions() == 1               # the caller's spec is unchanged


def test_clt_internals_are_points_at_the_read_and_write_hooks(loaded, tiny_models, tmp_path):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids   # 2 layers, D 64
    t = write_clt(tmp_path / "clt", L=2, F=16, D=64)
    clt = CrossLayerTranscoder.from_local(tmp_path / "clt")
    read0 = splice_point("blocks.0.hook_resid_mid", "hook_sae_acts_post")
    write1 = splice_point("blocks.1.hook_mlp_out", "hook_sae_recons")
    by_spec = model.forward(ids, splice(mi.HookSpec(), clt).capture(read0, write1))
    by_option = model.forward(ids, splice(mi.HookSpec(), clt, capture=True))
    for name in (read0, write1):
        torch.testing.assert_close(by_spec[name], by_option[name], rtol=0, atol=0)
    # Zero at layer 0's features removes their writes at layers 0 AND 1 (error term kept).
    mid = model.forward(ids, mi.HookSpec().capture("blocks.0.hook_resid_mid"))["blocks.0.hook_resid_mid"]
    acts0 = torch.relu(mid @ t["W_enc"][0].T + t["b_enc"][0])            # [B,S,F] by hand
    oracle = mi.HookSpec()
    for layer in range(2):
        oracle.intervene(f"blocks.{layer}.hook_mlp_out",
                         mi.Intervention.Add(-acts0 @ t["W_dec"][0][:, layer]))
    got = _logits(model, ids, splice(mi.HookSpec(), clt, use_error_term=True)
                  .intervene(read0, mi.Intervention.Zero))
    torch.testing.assert_close(got, _logits(model, ids, oracle), **ATOL)
    edits = _logits(model, ids, splice(mi.HookSpec(), clt, use_error_term=True, edits=[
        FeatureEdit.ablate([CltFeatureId(0, f) for f in range(16)])]))
    torch.testing.assert_close(got, edits, **ATOL)
    # A write provides recons / error / output only; the features live at the read hook.
    with pytest.raises(HookError, match="provide: hook_sae_error"):
        model.forward(ids, splice(mi.HookSpec(), clt).capture(
            splice_point("blocks.1.hook_mlp_out", "hook_sae_acts_post")))


def test_the_empty_spec_and_unspliced_calls_do_no_work(loaded):
    model = loaded["llama"]
    points = model.hook_points()
    runtime, _ = make_runtime(mi.HookSpec(), points, 2)
    assert runtime is NO_HOOKS
    # NO_HOOKS and a call outside any runtime fire nothing and return the same tensor.
    t = torch.ones(2)
    assert NO_HOOKS.call.fire(mi.HookPoint.parse(POST), t) is t
    call = ForwardCall(HookCache(), keep_grad=False)
    assert call.fire(mi.HookPoint.parse(POST), t) is t and not call.is_active(POST)


def test_memory_estimate_of_a_spec_with_splice_points_is_typed(loaded, sae_setup):
    """The analytic memory plan has no shapes for points an intervention provides: it says
    so with a typed error naming them instead of a raw KeyError."""
    from torch_mi.memory import estimate_memory

    sae, _ = sae_setup
    spec = mi.dictionaries.splice(mi.HookSpec(), sae)
    spec.capture(f"{HOOK}.hook_sae_acts_post")
    with pytest.raises(mi.MemoryReportError, match=r"no shape for .*hook_sae_acts_post"):
        estimate_memory(loaded["llama"], spec, 8)
