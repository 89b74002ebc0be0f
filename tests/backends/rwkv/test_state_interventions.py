"""RWKV state knockout / steering (inventory §3.6): where the state write is removed or
scaled, what that does to each version's outputs, the per-layer priority, the typed errors,
and the run_state_* experiments built on them."""

from __future__ import annotations

import copy

import pytest
import torch

import torch_mi as mi
from torch_mi.interp import (
    StateAblationResult,
    StateSteeringResult,
    run_state_knockout,
    run_state_steering,
    state_knockout_per_layer,
)

from . import reference
from .conftest import sample_ids

B, S, P = 2, 9, 3  # batch, tokens, the knocked-out position
LAYER = 1


def _knock(*positions: int, layers=None) -> mi.HookSpec:
    spec = mi.StateKnockoutSpec().positions(positions)
    if layers is not None:
        spec.layers(layers)
    return mi.HookSpec().set_state_knockout(spec)


def _steer(scale: float, *positions: int, layers=None) -> mi.StateSteeringSpec:
    spec = mi.StateSteeringSpec(scale).positions(positions)
    return spec.layers(layers) if layers is not None else spec


def _residuals(model, ids, spec: mi.HookSpec | None = None) -> mi.HookCache:
    spec = spec or mi.HookSpec()
    return model.forward(ids, spec.capture(*[mi.HookPoint.ResidPost(i)
                                             for i in range(model.num_layers)]))


def test_v6_the_knocked_out_token_keeps_its_output_and_later_tokens_change(rwkv_models):
    model, ids = rwkv_models["v6"].model, sample_ids(B, S)
    base = _residuals(model, ids)
    knocked = _residuals(model, ids, _knock(P, layers=[LAYER]))
    for i in range(model.num_layers):  # the bonus u·kᵀv of token P is untouched
        point = mi.HookPoint.ResidPost(i)
        assert torch.equal(knocked[point][:, :P + 1], base[point][:, :P + 1]), i
    assert torch.equal(knocked.output()[:, :P + 1], base.output()[:, :P + 1])
    later = (knocked.output()[:, P + 1:] - base.output()[:, P + 1:]).abs().amax(-1)
    assert bool((later > 1e-3).all()), later


def test_v7_the_knocked_out_token_itself_changes_too(rwkv_models):
    model, ids = rwkv_models["v7"].model, sample_ids(B, S)
    base = model.forward(ids).output()
    knocked = model.forward(ids, _knock(P, layers=[LAYER])).output()
    assert torch.equal(knocked[:, :P], base[:, :P])  # earlier tokens never see it
    moved = (knocked[:, P:] - base[:, P:]).abs().amax(-1)  # P reads the updated state
    assert bool((moved > 1e-3).all()), moved


def test_v6_knockout_equals_removing_the_write_from_the_carried_state(rwkv_models):
    """Independent route: run up to P, then token P alone with its kᵀv subtracted from the
    layer's carried state (hook_state Apply), then the rest: the logits match (fp64)."""
    model, ids = copy.deepcopy(rwkv_models["v6"].model.backend).double(), sample_ids(B, S, seed=4)
    knocked = model.forward(ids, _knock(P, layers=[LAYER])).output()
    state = model.make_state()
    head = model.forward(ids[:, :P], state=state).output()
    kv_points = (mi.HookPoint.RwkvK(LAYER), mi.HookPoint.RwkvV(LAYER))
    twin = model.make_state()  # the same prefix, to read token P's k and v
    model.forward(ids[:, :P], state=twin)
    probe = model.forward(ids[:, P:P + 1], mi.HookSpec().capture(*kv_points), state=twin)
    k, v = (probe[p][:, 0] for p in kv_points)  # [B,H,d]
    kv = k[..., :, None] * v[..., None, :]  # [B,H,d(key),d(value)]
    edit = mi.HookSpec().intervene(mi.HookPoint.RwkvState(LAYER),
                                   mi.Intervention.Apply(lambda s, _p: s - kv))
    mid = model.forward(ids[:, P:P + 1], edit, state=state).output()
    tail = model.forward(ids[:, P + 1:], state=state).output()
    torch.testing.assert_close(torch.cat([head, mid, tail], 1), knocked, rtol=1e-10,
                               atol=1e-10)


def test_v7_knockout_matches_the_formula_reference_without_the_write(rwkv_models, monkeypatch):
    """reference.py's per-head delta rule with the kᵀv write of P dropped at LAYER (fp64)."""
    tiny = rwkv_models["v7"]
    heads = tiny.model.num_heads
    calls = {"n": 0}

    def head_without_write(r, w, k, v, kk, a, n):
        layer = calls["n"] // heads
        calls["n"] += 1
        s, out = torch.zeros(n, n, dtype=r.dtype), torch.zeros(r.shape[0], n, dtype=r.dtype)
        for step in range(r.shape[0]):
            write = 0.0 if (layer == LAYER and step == P) else 1.0
            s = (torch.diag(w[step]) @ s - torch.outer(kk[step] * a[step], kk[step] @ s)
                 + write * torch.outer(k[step], v[step]))
            out[step] = r[step] @ s
        return out, s

    monkeypatch.setattr(reference, "_v7_head", head_without_write)
    ids = sample_ids(1, S, seed=2)
    backend = copy.deepcopy(tiny.model.backend).double()
    ours = backend.forward(ids, _knock(P, layers=[LAYER])).output()[0]
    tensors = {name: t.double() for name, t in tiny.tensors.items()}
    logits, _, _ = reference.ref_v7(tensors, ids[0].tolist(), tiny.head_size)
    torch.testing.assert_close(ours, logits, rtol=1e-10, atol=1e-10)


def _without_bonus(model, version: str):
    """A copy of the backend whose LAYER has no bonus term (V6 u = 0, V7 r_k = 0)."""
    backend = copy.deepcopy(model.backend)
    attn = backend.blocks[LAYER].attn
    with torch.no_grad():
        (attn.time_faaaa if version == "v6" else attn.r_k).zero_()
    return backend


def test_knocking_out_every_position_at_a_layer_equals_zeroing_k_there(rwkv):
    """Zeroing k also removes the bonus term of each token's own output, which a knockout
    keeps, so the logits agree once that term is removed (u = 0 / r_k = 0) and differ with it."""
    ids = sample_ids(B, S, seed=1)
    every = _knock(*range(S), layers=[LAYER])
    zero_k = mi.HookSpec().intervene(mi.HookPoint.RwkvK(LAYER), mi.Intervention.Zero)
    plain = rwkv.model.backend
    assert not torch.allclose(plain.forward(ids, every).output(),
                              plain.forward(ids, zero_k).output())
    backend = _without_bonus(rwkv.model, rwkv.version)
    torch.testing.assert_close(backend.forward(ids, every).output(),
                               backend.forward(ids, zero_k).output(), rtol=0, atol=1e-6)


def test_v6_every_position_knocked_out_only_decays_the_incoming_state(rwkv_models):
    """With a state carried in, knocking out every new position leaves diag(Πw)·S_0 at the
    layer: exactly the state that zeroing k gives."""
    model, ids = rwkv_models["v6"].model, sample_ids(B, S, seed=6)
    point = mi.HookPoint.RwkvState(LAYER)
    finals = []
    for spec in (_knock(*range(4), layers=[LAYER]),
                 mi.HookSpec().intervene(mi.HookPoint.RwkvK(LAYER), mi.Intervention.Zero)):
        state = model.make_state()
        model.forward(ids[:, :5], state=state)
        finals.append(model.forward(ids[:, 5:], spec.capture(point), state=state)[point])
    assert finals[0].abs().sum() > 0
    assert torch.equal(finals[0], finals[1])


def test_steering_with_scale_one_is_bit_identical_to_no_steering(rwkv):
    ids = sample_ids(B, S)
    points = [mi.HookPoint.RwkvState(i) for i in range(rwkv.model.num_layers)]
    base = rwkv.model.forward(ids, mi.HookSpec().capture(*points))
    steered = rwkv.model.forward(ids, mi.HookSpec().capture(*points).set_state_steering(
        _steer(1.0, *range(S))))
    assert torch.equal(steered.output(), base.output())
    for point in points:
        assert torch.equal(steered[point], base[point])


def test_steering_scales_the_write_and_zero_is_a_knockout(rwkv):
    ids = sample_ids(B, S)
    knocked = rwkv.model.forward(ids, _knock(P, layers=[LAYER])).output()
    zero = rwkv.model.forward(ids, mi.HookSpec().set_state_steering(
        _steer(0.0, P, layers=[LAYER]))).output()
    assert torch.equal(zero, knocked)
    base = rwkv.model.forward(ids).output()
    doubled = rwkv.model.forward(ids, mi.HookSpec().set_state_steering(
        _steer(2.0, P, layers=[LAYER]))).output()
    assert not torch.allclose(doubled, base) and not torch.allclose(doubled, knocked)


def test_knockout_wins_over_steering_for_the_whole_layer(rwkv):
    ids = sample_ids(B, S)
    knock = mi.StateKnockoutSpec().position(P).layer(LAYER)
    both = mi.HookSpec().set_state_knockout(knock).set_state_steering(
        _steer(3.0, P + 2, layers=[LAYER, 2]))  # P + 2 at LAYER: ignored (layer knocked)
    only_other = mi.HookSpec().set_state_knockout(knock).set_state_steering(
        _steer(3.0, P + 2, layers=[2]))
    out = rwkv.model.forward(ids, both).output()
    assert torch.equal(out, rwkv.model.forward(ids, only_other).output())
    knock_alone = rwkv.model.forward(ids, mi.HookSpec().set_state_knockout(knock)).output()
    assert not torch.allclose(out, knock_alone)  # the steering at layer 2 did apply


def test_positions_count_from_the_first_token_of_the_call(rwkv):
    ids = sample_ids(1, S, seed=3)
    whole = rwkv.model.forward(ids, _knock(6, layers=[LAYER])).output()
    state = rwkv.model.make_state()
    rwkv.model.forward(ids[:, :4], state=state)
    tail = rwkv.model.forward(ids[:, 4:], _knock(2, layers=[LAYER]), state=state).output()
    torch.testing.assert_close(tail, whole[:, 4:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda: _knock(S), "out of range"),
    (lambda: _knock(-1), r"an int >= 0\), got -1"),
    (lambda: _knock(1.5), r"an int >= 0\), got 1.5"),  # refused, not truncated to 1
    (lambda: _knock(True), r"an int >= 0\), got True"),
    (lambda: _knock(0, layers=[7]), "out of range"),
    (lambda: mi.HookSpec().set_state_knockout(mi.StateKnockoutSpec()), "no positions"),
    (lambda: mi.HookSpec().set_state_steering(_steer(float("nan"), 0)), "finite"),
    (lambda: mi.HookSpec().set_state_steering(
        mi.StateSteeringSpec(2.0).position(0).layer_range(1, 9)), "out of range"),
])
def test_bad_state_specs_are_refused_before_any_work(rwkv, make, match):
    ids = sample_ids(B, S)
    state = rwkv.model.make_state()
    rwkv.model.forward(ids[:, :2], state=state)
    before = [layer.wkv.clone() for layer in state.layers]
    with pytest.raises(mi.InterventionError, match=match):
        rwkv.model.forward(ids, make(), state=state)
    assert state.seen_tokens == 2
    assert all(torch.equal(a, b.wkv) for a, b in zip(before, state.layers, strict=True))


def test_a_backend_spec_of_the_wrong_type_is_refused(rwkv):
    spec = mi.HookSpec().set_backend_spec("state_knockout", [0, 1])
    with pytest.raises(mi.HookError, match="StateKnockoutSpec"):
        rwkv.model.forward(sample_ids(1, 3), spec)
    with pytest.raises(mi.HookError, match="cannot honour"):
        rwkv.model.forward(sample_ids(1, 3), mi.HookSpec().set_backend_spec("other", 1))
    with pytest.raises(mi.InterventionError, match=">= 0"):
        mi.StateSteeringSpec(-1.0)


# ---- interp runners ----------------------------------------------------------------------

def test_run_state_knockout_compares_the_last_position(rwkv):
    ids = sample_ids(1, S)[0].tolist()
    spec = mi.StateKnockoutSpec().position(0).layer(LAYER)
    result = run_state_knockout(rwkv.model, ids, spec)
    assert isinstance(result, StateAblationResult) and result.spec is spec
    base = rwkv.model.forward([ids], last_logits_only=True).output()[0, -1]
    knocked = rwkv.model.forward([ids], mi.HookSpec().set_state_knockout(spec),
                                 last_logits_only=True).output()[0, -1]
    torch.testing.assert_close(result.baseline_logits, base, rtol=0, atol=0)
    torch.testing.assert_close(result.ablated_logits, knocked, rtol=0, atol=0)
    assert result.kl_divergence() == pytest.approx(mi.kl_divergence(base, knocked))
    assert result.kl_divergence() > 0
    top = result.top_changed_tokens(3)
    assert len(top) == 3 and top[0][3] >= top[1][3] >= top[2][3]
    token = top[0][0]
    assert result.logit_diff(token) == pytest.approx(float(base[token] - knocked[token]))
    with pytest.raises(mi.InterventionError):
        result.logit_diff(10 ** 6)


def test_run_state_steering_and_prompt_lists(rwkv):
    prompts = [sample_ids(1, 5, seed=1)[0].tolist(), sample_ids(1, 7, seed=2)[0].tolist()]
    spec = _steer(0.5, 1, layers=[0, 2])
    batch = run_state_steering(rwkv.model, prompts, spec)
    assert len(batch) == 2 and all(isinstance(r, StateSteeringResult) for r in batch)
    alone = run_state_steering(rwkv.model, prompts[1], spec)
    torch.testing.assert_close(batch[1].steered_logits, alone.steered_logits, rtol=0, atol=0)
    assert (batch.kl_divergences() > 0).all()
    with pytest.raises(mi.InterventionError, match="out of range"):  # prompt 0 has 5 tokens
        run_state_steering(rwkv.model, prompts, _steer(0.5, 6))
    with pytest.raises(mi.InterventionError, match="StateSteeringSpec"):
        run_state_steering(rwkv.model, prompts, mi.StateKnockoutSpec().position(0))


def test_per_layer_knockout_profile(rwkv):
    ids = sample_ids(1, S)[0].tolist()
    kls = state_knockout_per_layer(rwkv.model, ids, [0, 1])
    assert kls.shape == (rwkv.model.num_layers,) and bool((kls > 0).all())
    single = run_state_knockout(rwkv.model, ids,
                                mi.StateKnockoutSpec().positions([0, 1]).layer(2))
    assert float(kls[2]) == pytest.approx(single.kl_divergence())
    with pytest.raises(mi.InterventionError, match="out of range"):
        state_knockout_per_layer(rwkv.model, ids, [S])


def test_a_transformer_refuses_state_knockout(loaded):
    model = loaded["llama"]
    with pytest.raises(mi.HookError, match="state_knockout"):
        run_state_knockout(model, [1, 2, 3], mi.StateKnockoutSpec().position(0))
