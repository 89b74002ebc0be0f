"""GenericRwkv's hook points: declared shapes, what the captured tensors are, and that an
intervention at every point that produces a tensor changes what comes after it."""

from __future__ import annotations

import math

import pytest
import torch

import torch_mi as mi

from .conftest import sample_ids

TOL = {"rtol": 1e-5, "atol": 1e-5}
B, S = 2, 6


def _concrete(shape: tuple) -> tuple:
    return tuple(B if d == "batch" else S if d == "seq" else d for d in shape)


def _capture_all(model, ids):
    points = model.hook_points()
    return points, model.forward(ids, mi.HookSpec().capture(*points))


def test_every_point_is_captured_with_its_declared_shape(rwkv):
    points, cache = _capture_all(rwkv.model, sample_ids(B, S))
    c = rwkv.model.backend.config
    per_layer = 21 if rwkv.version == "v7" else 19
    assert len(points) == 4 + per_layer * c.num_layers
    assert next(iter(points)) == mi.HookPoint.Embed and list(points)[-1] == mi.HookPoint.FinalNorm
    for point, shape in points.items():
        assert tuple(cache[point].shape) == _concrete(shape), point
        assert torch.isfinite(cache[point]).all(), point
    assert points[mi.HookPoint.RwkvState(0)] == ("batch", c.num_heads, c.head_dim, c.head_dim)
    assert points[mi.HookPoint.RwkvDecay(1)] == ("batch", "seq", c.num_heads, c.head_dim)
    assert str(mi.HookPoint.RwkvDecay(1)) == "blocks.1.rwkv.hook_decay"
    assert mi.HookPoint.parse("blocks.2.rwkv.hook_state") == mi.HookPoint.RwkvState(2)


def test_the_captured_tensors_mean_what_hooks_md_says(rwkv):
    ids = sample_ids(B, S)
    _, cache = _capture_all(rwkv.model, ids)
    model, n = rwkv.model, rwkv.model.num_layers
    torch.testing.assert_close(cache["hook_embed"][0, 1], model.backend.embedding_vector(
        int(ids[0, 1])))
    for i in range(n):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        attn, mlp = cache[f"blocks.{i}.hook_attn_out"], cache[f"blocks.{i}.hook_mlp_out"]
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_mid"], pre + attn, **TOL)
        torch.testing.assert_close(post, pre + attn + mlp, **TOL)
        if i + 1 < n:
            torch.testing.assert_close(cache[f"blocks.{i + 1}.hook_resid_pre"], post)
        w, decay = cache[f"blocks.{i}.rwkv.hook_w"], cache[f"blocks.{i}.rwkv.hook_decay"]
        torch.testing.assert_close(decay, torch.exp(w))
        low = math.exp(-math.exp(-0.5)) if rwkv.version == "v7" else 0.0
        assert bool((decay > low).all() and (decay < 1).all())
        normed = cache[f"blocks.{i}.ln1.hook_normalized"]
        torch.testing.assert_close(normed.mean(-1), torch.zeros(B, S), rtol=0, atol=1e-5)
        torch.testing.assert_close(normed * cache[f"blocks.{i}.ln1.hook_scale"],
                                   pre - pre.mean(-1, keepdim=True), **TOL)
        torch.testing.assert_close(cache[f"blocks.{i}.mlp.hook_post"],
                                   torch.relu(cache[f"blocks.{i}.mlp.hook_pre"]) ** 2)
        if rwkv.version == "v7":
            kk = cache[f"blocks.{i}.rwkv.hook_kk"]
            torch.testing.assert_close(kk.norm(dim=-1), torch.ones(kk.shape[:-1]), **TOL)
            a = cache[f"blocks.{i}.rwkv.hook_a"]
            assert bool(((a > 0) & (a < 1)).all())
    last = cache[f"blocks.{n - 1}.hook_resid_post"]
    torch.testing.assert_close(model.project_to_vocab(last), cache.output(), **TOL)


def test_the_state_hook_is_the_carried_state(rwkv):
    ids = sample_ids(B, S)
    state = rwkv.model.make_state()
    spec = mi.HookSpec().capture(mi.HookPoint.RwkvState(1))
    cache = rwkv.model.forward(ids, spec, state=state)
    assert torch.equal(cache[mi.HookPoint.RwkvState(1)], state.layers[1].wkv)
    assert state.layers[1].wkv.dtype == torch.float32


def _interventions(point: mi.HookPoint) -> list:
    if point.variant.endswith("Scale"):  # a zero scale divides by zero
        return [mi.Intervention.Scale(2.0)]
    return [mi.Intervention.Zero, mi.Intervention.Scale(2.0)]


def test_an_intervention_at_every_point_changes_the_output(rwkv):
    ids = sample_ids(B, S)
    base = rwkv.model.forward(ids).output()
    for point in rwkv.model.hook_points():
        if point.variant in ("RwkvState", "RwkvEffectiveAttn"):
            continue  # the carried state only (next test); read-only (test_effective_attn)
        for edit in _interventions(point):
            out = rwkv.model.forward(ids, mi.HookSpec().intervene(point, edit)).output()
            assert not torch.allclose(out, base), (point, edit)
            assert torch.isfinite(out).all(), (point, edit)


def test_an_intervention_on_the_state_changes_the_next_call_only(rwkv):
    ids = sample_ids(B, S)
    clean, edited = rwkv.model.make_state(), rwkv.model.make_state()
    spec = mi.HookSpec().capture(mi.HookPoint.RwkvState(0)).intervene(
        mi.HookPoint.RwkvState(0), mi.Intervention.Zero)
    first_clean = rwkv.model.forward(ids[:, :3], state=clean).output()
    cache = rwkv.model.forward(ids[:, :3], spec, state=edited)
    torch.testing.assert_close(cache.output(), first_clean, rtol=0, atol=0)
    assert cache[mi.HookPoint.RwkvState(0)].abs().sum() > 0  # captured before the Zero
    assert edited.layers[0].wkv.abs().sum() == 0
    after_clean = rwkv.model.forward(ids[:, 3:], state=clean).output()
    after_edited = rwkv.model.forward(ids[:, 3:], state=edited).output()
    assert not torch.allclose(after_clean, after_edited)


def test_an_add_on_resid_pre_equals_adding_to_the_previous_layer(rwkv):
    ids = sample_ids(B, S)
    delta = torch.randn(rwkv.model.hidden_size, generator=torch.Generator().manual_seed(1))
    one = rwkv.model.forward(ids, mi.HookSpec().intervene(mi.HookPoint.ResidPre(1),
                                                          mi.Intervention.Add(delta))).output()
    two = rwkv.model.forward(ids, mi.HookSpec().intervene(mi.HookPoint.ResidPost(0),
                                                          mi.Intervention.Add(delta))).output()
    torch.testing.assert_close(one, two, rtol=0, atol=0)


def test_bad_points_and_unsupported_specs_are_refused(rwkv):
    ids = sample_ids(1, 3)
    with pytest.raises(mi.HookError, match="Did you mean 'blocks.0.rwkv.hook_state'"):
        rwkv.model.forward(ids, mi.HookSpec().capture("blocks.0.rwkv.hook_stat"))
    with pytest.raises(mi.HookError, match="out of range"):
        rwkv.model.forward(ids, mi.HookSpec().capture(mi.HookPoint.RwkvDecay(3)))
    with pytest.raises(mi.HookError, match="AttnPattern is not computed by this backend"):
        rwkv.model.forward(ids, mi.HookSpec().capture(mi.HookPoint.AttnPattern(0)))
    with pytest.raises(mi.HookError, match="cannot honour the HookSpec entry 'other'"):
        rwkv.model.forward(ids, mi.HookSpec().set_backend_spec("other", 1))
    with pytest.raises(mi.InterventionError):
        rwkv.model.forward(ids, mi.HookSpec().intervene(
            mi.HookPoint.RwkvR(0), mi.Intervention.Add(torch.ones(7))))


def test_v6_has_no_v7_points(rwkv_models):
    model = rwkv_models["v6"].model
    with pytest.raises(mi.HookError, match="RwkvA is not computed"):
        model.forward(sample_ids(1, 3), mi.HookSpec().capture(mi.HookPoint.RwkvA(0)))


@pytest.mark.parametrize("seq", [1, 5, 40])
def test_relu_fused_into_the_key_matmul_changes_no_bit(rwkv, seq):
    """Without a reader of ``mlp.hook_pre`` the channel mix's ReLU runs inside oneDNN's
    GEMM; capturing the point (which materialises the pre-activation) gives the same bits,
    and the captured neurons are relu(pre)^2 of the captured pre-activation."""
    model, ids = rwkv.model, sample_ids(2, seq, seed=5)
    fused = model.forward(ids).output()
    points = [f"blocks.{i}.mlp.hook_pre" for i in range(model.num_layers)]
    hidden = [f"blocks.{i}.mlp.hook_post" for i in range(model.num_layers)]
    cache = model.forward(ids, mi.HookSpec().capture(*points, *hidden))
    assert torch.equal(cache.output(), fused)
    for pre, post in zip(points, hidden, strict=True):
        assert torch.equal(cache[post], torch.relu(cache[pre]).square())
