"""GenericRwkv's recurrence against an independent per-head, per-step computation written
from the formulas (reference.py), and the recurrent state carried across calls."""

from __future__ import annotations

import copy

import pytest
import torch

import torch_mi as mi
from torch_mi.backends.rwkv import GenericRwkv, RwkvState

from .conftest import sample_ids
from .reference import ref_v6, ref_v7

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _all_points(model, *kinds: str) -> list[str]:
    return [f"blocks.{i}.{k}" for i in range(model.num_layers) for k in kinds]


def _against_reference(rwkv, backend, dtype, tol: dict) -> None:
    ids = sample_ids(2, 14, seed=5)
    spec = mi.HookSpec().capture(*_all_points(backend, "hook_resid_post", "rwkv.hook_state"))
    cache = backend.forward(ids, spec)
    ref = ref_v6 if rwkv.version == "v6" else ref_v7
    tensors = {name: t.to(dtype) for name, t in rwkv.tensors.items()}
    for row in range(2):
        logits, posts, states = ref(tensors, ids[row].tolist(), rwkv.head_size)
        torch.testing.assert_close(cache.output()[row].to(dtype), logits, **tol)
        for i in range(backend.num_layers):
            torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_post"][row].to(dtype),
                                       posts[i], **tol)
            torch.testing.assert_close(cache[f"blocks.{i}.rwkv.hook_state"][row].to(dtype),
                                       states[i], **tol)


def test_the_recurrence_is_the_formulas_exactly_in_float64(rwkv):
    """In fp64 (model and reference) the two agree to rounding: every term is right."""
    backend = copy.deepcopy(rwkv.model.backend).double()
    _against_reference(rwkv, backend, torch.float64, {"rtol": 1e-10, "atol": 1e-10})


def test_float32_logits_residuals_and_states_match_the_reference(rwkv):
    """fp32 model vs the fp64 reference: only fp32 rounding is left (|logits| ~ 10)."""
    _against_reference(rwkv, rwkv.model.backend, torch.float64, {"rtol": 1e-5, "atol": 5e-5})


@pytest.mark.parametrize("split", [2, 6, 12])
def test_state_continues_a_sequence(rwkv, split):
    ids = sample_ids(2, 14, seed=7)
    spec = mi.HookSpec().capture(*_all_points(rwkv.model, "rwkv.hook_state", "hook_resid_post"))
    whole = rwkv.model.forward(ids, spec)
    state = rwkv.model.make_state()
    first = rwkv.model.forward(ids[:, :split], state=state).output()
    second = rwkv.model.forward(ids[:, split:], spec, state=state)
    torch.testing.assert_close(torch.cat([first, second.output()], dim=1), whole.output(), **TOL)
    assert state.seen_tokens == 14 and state.batch_size() == 2
    for i in range(rwkv.model.num_layers):
        final = whole[f"blocks.{i}.rwkv.hook_state"]
        torch.testing.assert_close(state.layers[i].wkv, final, **TOL)
        torch.testing.assert_close(second[f"blocks.{i}.rwkv.hook_state"], final, **TOL)
    assert second[mi.HookPoint.ResidPost(0)].shape[1] == 14 - split  # hooks see new positions


def test_token_by_token_equals_one_forward_in_float64(rwkv):
    """One token per call (and a first call of one token) continues exactly. In fp64: in
    fp32 a [B,1,D] matmul rounds differently from a [B,S,D] one, and the per-head
    GroupNorm of position 0 (state still zero, tiny variance) amplifies that ~50x."""
    backend = copy.deepcopy(rwkv.model.backend).double()
    ids = sample_ids(2, 9, seed=11)
    whole = backend.forward(ids).output()
    state = backend.make_state()
    steps = [backend.forward(ids[:, t:t + 1], state=state, last_logits_only=True).output()
             for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, rtol=1e-10, atol=1e-10)
    state = backend.make_state()
    first = backend.forward(ids[:, :1], state=state).output()
    rest = backend.forward(ids[:, 1:], state=state).output()
    torch.testing.assert_close(torch.cat([first, rest], dim=1), whole, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seq", [1, 2, 3, 9, 40])  # 40: chunked WKV
def test_last_logits_only(rwkv, seq):
    """A hook-free last-logits call runs the last block's channel mix on its last two
    positions only: same logits, and the same state (token shifts and WKV) afterwards."""
    ids = sample_ids(2, seq, seed=11)
    whole = rwkv.model.forward(ids).output()
    last = rwkv.model.forward(ids, last_logits_only=True).output()
    assert last.shape == (2, 1, whole.shape[-1])
    torch.testing.assert_close(last[:, 0], whole[:, -1], **TOL)
    full_state, trimmed_state = rwkv.model.make_state(), rwkv.model.make_state()
    rwkv.model.forward(ids, state=full_state)
    after = rwkv.model.forward(ids, state=trimmed_state, last_logits_only=True).output()
    torch.testing.assert_close(after, last, rtol=0, atol=0)
    for full, trimmed in zip(full_state.layers, trimmed_state.layers, strict=True):
        for name in ("att_x", "wkv", "ffn_x"):
            torch.testing.assert_close(getattr(trimmed, name), getattr(full, name), **TOL)
    with pytest.raises(mi.InputError, match="last_logits_only"):
        rwkv.model.backend.forward(ids, last_logits_only=1)


def test_generation_with_state_equals_recompute(rwkv):
    prompt = sample_ids(1, 5, seed=2)[0].tolist()
    cached = rwkv.model.generate(prompt, 6, ignore_eos=True)
    recomputed = rwkv.model.generate(prompt, 6, ignore_eos=True, recompute=True)
    assert cached.token_ids == recomputed.token_ids
    assert len(cached.token_ids) == len(prompt) + 6


def _snapshot(state: RwkvState) -> list[torch.Tensor]:
    return [t.clone() for s in state.layers for t in (s.att_x, s.wkv, s.ffn_x)]


def test_a_failing_forward_leaves_the_state_unchanged(rwkv):
    ids = sample_ids(1, 8, seed=3)
    state = rwkv.model.make_state()
    rwkv.model.forward(ids[:, :4], state=state)
    before, seen = _snapshot(state), state.seen_tokens

    def boom(tensor, point):
        raise RuntimeError("intervention failed")

    last = rwkv.model.num_layers - 1
    for point in (mi.HookPoint.ResidPost(last), mi.HookPoint.FinalNorm):
        with pytest.raises(RuntimeError, match="intervention failed"):
            rwkv.model.forward(ids[:, 4:], mi.HookSpec().intervene(point, mi.Intervention.Apply(
                boom)), state=state)
        assert state.seen_tokens == seen
        for got, want in zip(_snapshot(state), before, strict=True):
            assert torch.equal(got, want)
    with pytest.raises(mi.InputError):  # bad ids: refused before any work
        rwkv.model.forward([[10_000]], state=state)
    assert state.seen_tokens == seen
    # and the state still continues correctly afterwards
    torch.testing.assert_close(rwkv.model.forward(ids[:, 4:], state=state).output(),
                               rwkv.model.forward(ids).output()[:, 4:], **TOL)


def test_states_from_another_model_or_batch_are_refused(rwkv, rwkv_models):
    other = rwkv_models["v7" if rwkv.version == "v6" else "v6"].model
    ids = sample_ids(2, 4)
    with pytest.raises(mi.InputError, match="another model"):
        rwkv.model.forward(ids, state=other.make_state())
    twin = GenericRwkv.empty(rwkv.model.backend.config)  # same config, another instance
    with pytest.raises(mi.InputError, match="another model"):
        rwkv.model.forward(ids, state=twin.make_state())
    state = rwkv.model.make_state()
    rwkv.model.forward(ids, state=state)
    with pytest.raises(mi.InputError, match="holds a batch of 2"):
        rwkv.model.forward(ids[:1], state=state)
    with pytest.raises(mi.InputError, match="RwkvState"):
        rwkv.model.forward(ids, state=rwkv_models["v6"].model.backend.make_state().__dict__)
    assert state.seen_tokens == 4


def test_padding_is_refused_and_an_all_ones_mask_is_accepted(rwkv):
    ids = sample_ids(2, 5)
    plain = rwkv.model.forward(ids).output()
    with pytest.raises(mi.InputError, match="padded batches"):
        rwkv.model.forward(ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1], [1] * 5]))
    torch.testing.assert_close(rwkv.model.forward(ids, attention_mask=torch.ones(2, 5)).output(),
                               plain, rtol=0, atol=0)
    state = rwkv.model.make_state()
    rwkv.model.forward(ids[:, :3], state=state)
    out = rwkv.model.forward(ids[:, 3:], attention_mask=torch.ones(2, 5), state=state).output()
    torch.testing.assert_close(out, plain[:, 3:], **TOL)
    with pytest.raises(mi.InputError, match="attention_mask has shape"):
        rwkv.model.forward(ids, attention_mask=torch.ones(2, 7))


def test_bfloat16_load_runs_close_to_float32(rwkv):
    model = mi.MIModel.from_pretrained(rwkv.folder, device="cpu", dtype=torch.bfloat16)
    ids = sample_ids(1, 6)
    low = model.forward(ids).output().float()
    high = rwkv.model.forward(ids).output()
    assert model.backend.dtype == torch.bfloat16
    assert (low - high).abs().max() < 0.1 * high.abs().max()
    assert (low.argmax(-1) == high.argmax(-1)).float().mean() > 0.5
