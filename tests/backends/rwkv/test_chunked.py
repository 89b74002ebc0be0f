"""The chunked (block-parallel) WKV against the token-by-token recurrence it replaces for
prompts: the kernels on random inputs, the whole model with and without hooks, state
continuation, the fallbacks, and that the chunked path is really taken when allowed.

The recurrence (wkv.py) is itself checked against the formulas and the ``rwkv`` package
(test_recurrence.py, test_oracle_parity.py); here it is the oracle. Tolerance: 1e-5 of the
expected tensor's scale, as in the parity tests."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import torch_mi as mi
from torch_mi.backends.rwkv import time_mix6, time_mix7, wkv_chunked
from torch_mi.backends.rwkv.chunks import CHUNK, chunk_size
from torch_mi.backends.rwkv.wkv import wkv6, wkv7
from torch_mi.backends.rwkv.wkv_chunked import (
    MIN_CHUNKED_LEN,
    chunk_allowed,
    wkv6_chunked,
    wkv7_chunked,
)
from torch_mi.errors import InputError
from torch_mi.hooks.state import StateKnockoutSpec, StateSteeringSpec

from .conftest import sample_ids

RTOL = 1e-5


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> None:
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, atol=rtol * scale, rtol=rtol)


def _inputs(seq: int, seed: int, dtype=torch.float32, batch: int = 2, heads: int = 3,
            d: int = 16, decay_spread: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    shape = (batch, seq, heads, d)
    out = {"r": rn(*shape), "k": rn(*shape), "v": rn(*shape), "state": rn(batch, heads, d, d),
           "u": rn(heads, d), "kk": F.normalize(rn(*shape), dim=-1),
           "a": torch.sigmoid(rn(*shape)),
           "w6": torch.exp(-torch.exp(rn(*shape) * decay_spread - 1.0)),
           "w7": torch.exp(-0.6065306597126334 * torch.sigmoid(rn(*shape)))}
    return {k: v.to(dtype) for k, v in out.items()}


def _pair(version: str, x: dict, scale=None):
    if version == "v6":
        args = (x["r"], x["k"], x["v"], x["w6"], x["u"], x["state"], scale)
        return wkv6(*args), wkv6_chunked(*args)
    args = (x["r"], x["w7"], x["k"], x["v"], x["kk"], x["a"], x["state"], scale)
    return wkv7(*args), wkv7_chunked(*args)


# ---- the kernels --------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v6", "v7"])
@pytest.mark.parametrize("seq", [CHUNK - 1, CHUNK, 2 * CHUNK + 5, 77])
def test_chunked_kernel_equals_the_recurrence_float32(version, seq):
    x = _inputs(seq, seed=seq)
    (y, s), (yc, sc) = _pair(version, x)
    assert yc.shape == y.shape and sc.shape == s.shape and yc.dtype == y.dtype
    close(yc, y)
    close(sc, s)


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_chunked_kernel_is_the_recurrence_to_rounding_in_float64(version):
    """In fp64 the two differ only by rounding: the algebra is exact, not approximate."""
    x = _inputs(70, seed=1, dtype=torch.float64)
    (y, s), (yc, sc) = _pair(version, x)
    assert yc.dtype == torch.float64
    close(yc, y, rtol=1e-11)
    close(sc, s, rtol=1e-11)


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_chunked_kernel_applies_the_state_write_scale(version):
    """Knockout (0) and steering (2.5) scales per position, as the recurrence applies them."""
    x = _inputs(45, seed=4)
    scale = torch.ones(45)
    scale[[0, 3, 33, 44]] = 0.0
    scale[[5, 40]] = 2.5
    (y, s), (yc, sc) = _pair(version, x, scale)
    close(yc, y)
    close(sc, s)
    (y_plain, _), _ = _pair(version, x)
    assert (y - y_plain).abs().max() > 1e-2  # the scale did change something


@pytest.mark.parametrize(("log_decay", "chunk"), [(-3.5, 32), (-5.0, 16), (-9.0, 8)])
def test_fast_v6_decays_halve_the_chunk_and_stay_exact(log_decay, chunk):
    """A V6 log-decay of -3.5 per step spans 112 over 32 positions (e^112 overflows fp32):
    split at the chunk middle each factor spans 56 <= MAX_SPAN, so 32 positions still fit
    (from the chunk start only 16 would); -5.0 and -9.0 per step shrink the chunk to 16 and
    8, and the numbers stay the recurrence's."""
    x = _inputs(50, seed=2)
    noise = 0.01 * torch.rand(x["w6"].shape, dtype=torch.float64)
    x["w6"] = torch.exp(log_decay + noise).float()
    assert chunk_size(x["w6"], centred=True) == chunk
    assert chunk_size(x["w6"]) == chunk // 2  # referenced to the chunk start
    (y, s), (yc, sc) = _pair("v6", x)
    close(yc, y)
    close(sc, s)


@pytest.mark.parametrize("version", ["v6", "v7"])
def test_decays_that_cannot_be_factored_fall_back_to_the_recurrence(version, monkeypatch):
    """A decay intervened to ~0 (log -69 per step) or to 0 exactly: no chunk size fits, the
    recurrence runs and gives its own numbers."""
    x = _inputs(20, seed=3)
    for tiny in (1e-30, 0.0):
        x["w6"] = x["w6"].clone()
        x["w7"] = x["w7"].clone()
        x["w6"][:, 5] = tiny
        x["w7"][:, 5] = tiny
        assert chunk_size(x["w6"]) is None and chunk_size(x["w6"], centred=True) is None
        calls: list[int] = []
        real = wkv_chunked.wkv6 if version == "v6" else wkv_chunked.wkv7
        monkeypatch.setattr(wkv_chunked, "wkv6" if version == "v6" else "wkv7",
                            lambda *a, _real=real, _calls=calls: _calls.append(1) or _real(*a))
        (y, s), (yc, sc) = _pair(version, x)
        assert calls == [1]
        torch.testing.assert_close(yc, y, rtol=0, atol=0)
        torch.testing.assert_close(sc, s, rtol=0, atol=0)
        monkeypatch.undo()


# ---- the predicate ------------------------------------------------------------------------
def test_chunk_allowed_decisions():
    assert chunk_allowed(MIN_CHUNKED_LEN)
    assert not chunk_allowed(MIN_CHUNKED_LEN - 1)  # generation steps: the recurrence
    assert not chunk_allowed(100, enabled=False)
    assert not chunk_allowed(100, per_step_state=True)


@pytest.mark.parametrize("bad", ["no", 1, None])
def test_chunk_switch_must_be_a_bool(rwkv_models, monkeypatch, bad):
    backend = rwkv_models["v6"].model.backend
    monkeypatch.setattr(backend, "chunked_wkv", bad)
    with pytest.raises(InputError, match="chunked_wkv"):
        backend.forward(sample_ids(1, 20))


# ---- the model ----------------------------------------------------------------------------
def _spy(monkeypatch, version: str) -> list[int]:
    """Count calls of the chunked kernel from the time mix of ``version``."""
    module, name = (time_mix6, "wkv6_chunked") if version == "v6" else (time_mix7, "wkv7_chunked")
    real, calls = getattr(module, name), []

    def spy(*args):
        calls.append(args[0].shape[1])
        return real(*args)

    monkeypatch.setattr(module, name, spy)
    return calls


def _both_ways(backend, monkeypatch, *args, **kwargs):
    """(chunked result, recurrence result) of backend.forward(*args, **kwargs)."""
    chunked = backend.forward(*args, **kwargs)
    monkeypatch.setattr(backend, "chunked_wkv", False)
    recurrent = backend.forward(*args, **kwargs)
    monkeypatch.undo()
    return chunked, recurrent


def test_model_takes_the_chunked_path_only_when_allowed(rwkv, monkeypatch):
    backend, n = rwkv.model.backend, rwkv.model.backend.num_layers
    calls = _spy(monkeypatch, rwkv.version)
    backend.forward(sample_ids(2, 45))
    assert calls == [45] * n
    calls.clear()
    backend.forward(sample_ids(2, MIN_CHUNKED_LEN - 1))  # too short: recurrence
    assert calls == []
    monkeypatch.setattr(backend, "chunked_wkv", False)  # switched off: recurrence
    backend.forward(sample_ids(2, 45))
    assert calls == []


def test_model_chunked_equals_recurrence_without_hooks(rwkv, monkeypatch):
    ids = sample_ids(2, 45, seed=1)
    chunked, recurrent = _both_ways(rwkv.model.backend, monkeypatch, ids)
    close(chunked.output(), recurrent.output())


def test_model_chunked_equals_recurrence_at_every_hook_point(rwkv, monkeypatch):
    """Capture everything (effective attention included) with an intervention upstream of
    the WKV and a state steering/knockout: every captured tensor agrees."""
    backend = rwkv.model.backend
    spec = (mi.HookSpec().capture(*backend.hook_points())
            .intervene("blocks.1.rwkv.hook_k", mi.Intervention.Scale(0.8))
            .set_state_steering(StateSteeringSpec(2.0).positions([2, 35]))
            .set_state_knockout(StateKnockoutSpec().positions([7]).layers([0])))
    calls = _spy(monkeypatch, rwkv.version)
    chunked, recurrent = _both_ways(backend, monkeypatch, sample_ids(2, 37, seed=2), spec)
    assert len(calls) == backend.num_layers  # the first forward ran chunked
    close(chunked.output(), recurrent.output())
    for point in backend.hook_points():
        close(chunked[point], recurrent[point])


@pytest.mark.parametrize("split", [3, 20, 33])
def test_state_continuation_with_chunks_equals_one_forward(rwkv, split):
    """forward(ids[:, :k]) then forward(ids[:, k:], state) == forward(ids), each part chunked
    or not depending on its length."""
    model, ids = rwkv.model, sample_ids(2, 53, seed=3)
    points = [f"blocks.{i}.rwkv.hook_state" for i in range(model.num_layers)]
    whole = model.forward(ids, mi.HookSpec().capture(*points))
    state = model.make_state()
    first = model.forward(ids[:, :split], state=state).output()
    second = model.forward(ids[:, split:], state=state).output()
    close(torch.cat([first, second], dim=1), whole.output())
    for i, point in enumerate(points):
        close(state.layers[i].wkv, whole[point])


def test_float64_model_chunked_is_the_recurrence_to_rounding(rwkv, monkeypatch):
    backend = copy.deepcopy(rwkv.model.backend).double()
    chunked, recurrent = _both_ways(backend, monkeypatch, sample_ids(1, 41, seed=4))
    close(chunked.output(), recurrent.output(), rtol=1e-10)


@pytest.mark.parametrize("version", ["v6", "v7"])
@pytest.mark.parametrize("factor", [1.05, 1.6])
def test_decays_above_one_from_an_intervention_stay_exact(version, factor):
    """A decay steered above 1 (the state grows): 1.05/step fits whole chunks, 1.6/step
    (e^0.47, spans 30 over 64 positions) shrinks them or falls back; either way the chunked
    kernel gives the recurrence's numbers."""
    x = _inputs(70, seed=6)
    x["w6"] = torch.full_like(x["w6"], factor)
    x["w7"] = torch.full_like(x["w7"], factor)
    (y, s), (yc, sc) = _pair(version, x)
    close(yc, y)
    close(sc, s)
