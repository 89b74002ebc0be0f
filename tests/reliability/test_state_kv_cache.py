"""Transactional state: a forward that raises leaves the caller's KVCache exactly as it was,
so retrying the step gives the logits of a run that never failed."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly

HP = mi.HookPoint


def _raise_at(point, exc: BaseException) -> mi.HookSpec:
    def boom(t, p):
        raise exc

    return mi.HookSpec().intervene(point, mi.Intervention.Apply(boom))


def _state_view(state) -> tuple:
    """Everything a caller can observe of a cache (lengths, counters, stored K/V)."""
    layers = [state.layer(i) for i in range(state.n_layers())]
    return (state.seq_len(), state.seen_tokens,
            [(None if k is None else k.clone(), None if v is None else v.clone()) for k, v in layers])


def _assert_same(a: tuple, b: tuple) -> None:
    assert a[:2] == b[:2]
    for (k1, v1), (k2, v2) in zip(a[2], b[2], strict=True):
        assert (k1 is None) == (k2 is None)
        if k1 is not None:
            assert torch.equal(k1, k2) and torch.equal(v1, v2)


@pytest.fixture
def prefilled(tiny_models, loaded):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids[:1]  # [1, 20]
    state = model.make_state()
    model.forward(ids[:, :-1], state=state)
    return model, ids, state


FAILURES = [
    ("apply_raises_in_last_layer", lambda: _raise_at(HP.ResidPost(1), RuntimeError("boom")), RuntimeError),
    ("keyboard_interrupt_mid_forward",
     lambda: _raise_at(HP.AttnOut(1), KeyboardInterrupt()), KeyboardInterrupt),
    ("bad_apply_result_in_layer_1", lambda: mi.HookSpec().intervene(
        HP.MlpOut(1), mi.Intervention.Apply(lambda t, p: t.double())), mi.InterventionError),
    ("replace_of_wrong_shape_in_head", lambda: mi.HookSpec().intervene(
        HP.FinalNorm, mi.Intervention.Replace(torch.zeros(3))), mi.InterventionError),
]


@pytest.mark.parametrize(("spec", "error"), [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES])
def test_a_failed_cached_step_leaves_the_cache_unchanged(prefilled, spec, error):
    model, ids, state = prefilled
    before = _state_view(state)
    with raises_exactly(error):
        model.forward(ids[:, -1:], spec(), state=state)
    _assert_same(before, _state_view(state))


def test_retrying_the_failed_step_gives_the_logits_of_a_clean_run(prefilled):
    """The issue's case: the cache used to advance, and the retry was off by ~21 logits."""
    model, ids, state = prefilled
    with pytest.raises(RuntimeError, match="boom"):
        model.forward(ids[:, -1:], _raise_at(HP.ResidPre(1), RuntimeError("boom")), state=state)
    retried = model.forward(ids[:, -1:], state=state).output()[0, -1]
    full = model.forward(ids).output()[0, -1]
    torch.testing.assert_close(retried, full, atol=1e-5, rtol=1e-5)
    assert int(retried.argmax()) == int(full.argmax())
    assert state.seq_len() == 20 and state.seen_tokens == 20


def test_a_failed_first_call_leaves_an_empty_cache_empty(tiny_models, loaded):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids[:1]
    state = model.make_state()
    with pytest.raises(RuntimeError):
        model.forward(ids, _raise_at(HP.ResidPost(1), RuntimeError("boom")), state=state)
    assert state.is_empty() and state.seen_tokens == 0 and state.layer(0) == (None, None)
    assert state.memory_usage() == 0  # the buffers allocated during the call were dropped


def test_a_refused_step_leaves_the_cache_unchanged(prefilled):
    model, ids, state = prefilled
    before = _state_view(state)
    with raises_exactly(mi.InputError, match=r"attention_mask has shape \[1, 3\], expected \[1, 20\]"):
        model.forward(ids[:, -1:], attention_mask=torch.ones(1, 3), state=state)
    with raises_exactly(mi.InputError, match=r"token id 300"):
        model.forward([[300]], state=state)
    _assert_same(before, _state_view(state))


def test_a_failed_generation_step_inside_generate_leaves_no_state(loaded):
    """generate owns its state; a failing hook there surfaces as the hook's error."""
    model = loaded["llama"]
    calls = []

    def fail_on_third(t, p):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("third step")
        return t

    spec = mi.HookSpec().intervene(HP.ResidPost(0), mi.Intervention.Apply(fail_on_third))
    with pytest.raises(RuntimeError, match="third step"):
        model.generate([5, 6, 7], 5, hooks=spec, ignore_eos=True)
    assert len(calls) == 3


BAD_CACHE_CALLS = [
    ("trim_to_float", lambda c: c.trim_to(2.5), r"KVCache.trim_to\(max_len\) needs an int >= 0, got 2.5"),
    ("trim_to_negative", lambda c: c.trim_to(-1), r"KVCache.trim_to\(max_len\) needs an int >= 0, got -1"),
    ("memory_limit_str", lambda c: c.enforce_memory_limit("1GB"),
     r"KVCache.enforce_memory_limit\(max_bytes\) needs an int >= 0, got '1GB'"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in BAD_CACHE_CALLS],
 ids=[c[0] for c in BAD_CACHE_CALLS])
def test_bad_cache_maintenance_arguments(prefilled, call, match):
    _, _, state = prefilled
    before = _state_view(state)
    with raises_exactly(mi.InputError, match=match):
        call(state)
    _assert_same(before, _state_view(state))


def test_cache_layer_index_is_checked(prefilled):
    _, _, state = prefilled
    with raises_exactly(mi.HookError, match=r"KVCache has 2 layers; layer 1.5 is out of range"):
        state.layer(1.5)
