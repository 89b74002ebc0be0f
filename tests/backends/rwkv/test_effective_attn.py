"""``blocks.{i}.rwkv.hook_effective_attn`` (inventory §5.9): normalised rows, causal, equal to
brute-force computations from the captured r / k / decays (RWKV-6: explicit products of
decays; RWKV-7: explicit products of the d×d transition matrices), consistent with the
WKV output, and computed only when captured."""

from __future__ import annotations

import copy

import pytest
import torch

import torch_mi as mi
from torch_mi.backends.rwkv import time_mix6, time_mix7

from .conftest import sample_ids

B, S, LAYER = 2, 7, 1
EPS = 1e-10


def _attn(layer: int = LAYER) -> mi.HookPoint:
    return mi.HookPoint.parse(f"blocks.{layer}.rwkv.hook_effective_attn")


def _normalise(raw: torch.Tensor) -> torch.Tensor:
    pos = torch.relu(raw)
    return pos / (pos.sum(-1, keepdim=True) + EPS)


def _capture(model, ids, *names: str, spec: mi.HookSpec | None = None) -> mi.HookCache:
    points = [_attn()] + [mi.HookPoint.parse(f"blocks.{LAYER}.rwkv.{n}") for n in names]
    return model.forward(ids, (spec or mi.HookSpec()).capture(*points))


def test_declared_shape_causal_and_rows_sum_to_one(rwkv):
    model = rwkv.model
    c = model.backend.config
    assert model.hook_points()[_attn()] == ("batch", c.num_heads, "seq", "seq")
    assert str(_attn(2)) == "blocks.2.rwkv.hook_effective_attn"
    attn = _capture(model, sample_ids(B, S))[_attn()]
    assert attn.shape == (B, c.num_heads, S, S) and attn.dtype == torch.float32
    assert torch.equal(torch.triu(attn, 1), torch.zeros_like(attn))  # no future keys
    assert bool((attn >= 0).all())
    sums = attn.sum(-1)  # [B,H,S]: 1, or 0 where every entry was relu'd away
    ones = (sums - 1).abs() < 1e-5
    assert bool((ones | (sums == 0)).all()) and bool(ones.float().mean() > 0.5)


def test_a_row_with_nothing_positive_is_zero_not_nan(rwkv):
    spec = mi.HookSpec().intervene(mi.HookPoint.RwkvR(LAYER), mi.Intervention.Zero)
    attn = _capture(rwkv.model, sample_ids(B, S), spec=spec)[_attn()]
    assert torch.equal(attn, torch.zeros_like(attn))


@pytest.mark.parametrize("batch, seq, edit", [
    (B, S, None),
    (1, 70, None),  # several query blocks (the matmul through a block start)
    (1, 40, mi.Intervention.Scale(0.0)),  # decays of exactly 0 (log = -inf): no NaN
])
def test_v6_equals_the_brute_force_products_of_captured_decays(rwkv_models, batch, seq, edit):
    tiny = rwkv_models["v6"]
    spec = mi.HookSpec()
    if edit is not None:
        spec.intervene(mi.HookPoint.RwkvDecay(LAYER), edit)
    cache = _capture(tiny.model, sample_ids(batch, seq, seed=3), "hook_r", "hook_k",
                     "hook_decay", spec=spec)
    r, k = (cache[f"blocks.{LAYER}.rwkv.hook_{n}"].double() for n in ("r", "k"))
    w = cache[f"blocks.{LAYER}.rwkv.hook_decay"].double()
    if edit is not None:  # the capture precedes the intervention: the forward used zeros
        w = torch.zeros_like(w)
    u = tiny.model.backend.blocks[LAYER].attn.time_faaaa.double()  # [H,d]
    heads = r.shape[2]
    raw = torch.zeros(batch, heads, seq, seq, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for t in range(seq):
                raw[b, h, t, t] = (r[b, t, h] * k[b, t, h] * u[h]).sum()
                decay = torch.ones_like(r[b, t, h])  # Π_{j=i+1}^{t-1} w_j, grown as i falls
                for i in range(t - 1, -1, -1):
                    raw[b, h, t, i] = (r[b, t, h] * k[b, i, h] * decay).sum()
                    decay = decay * w[b, i, h]
    attn = cache[_attn()].double()
    assert bool(torch.isfinite(attn).all())
    torch.testing.assert_close(attn, _normalise(raw), rtol=1e-5, atol=1e-6)


def test_v7_equals_the_brute_force_product_of_transition_matrices(rwkv_models):
    tiny = rwkv_models["v7"]
    names = ("hook_r", "hook_k", "hook_decay", "hook_kk", "hook_a")
    cache = _capture(tiny.model, sample_ids(B, S, seed=4), *names)
    r, k, w, kk, a = (cache[f"blocks.{LAYER}.rwkv.{n}"].double() for n in names)
    k_a = tiny.model.backend.blocks[LAYER].attn.k_a.double().view(r.shape[2], -1)  # [H,d]
    k = k * (1 + (a - 1) * k_a)  # the key the state is written with
    _, _, heads, d = r.shape
    raw = torch.zeros(B, heads, S, S, dtype=torch.float64)
    for b in range(B):
        for h in range(heads):
            # S_t = T_t S_{t-1} + k_t v_tᵀ with T_t = diag(w_t) - (kk_t ⊙ a_t) kk_tᵀ
            trans = [torch.diag(w[b, j, h]) - torch.outer(kk[b, j, h] * a[b, j, h], kk[b, j, h])
                     for j in range(S)]
            for t in range(S):
                for i in range(t + 1):
                    chain = torch.eye(d, dtype=torch.float64)
                    for j in range(t, i, -1):  # T_t T_{t-1} ... T_{i+1}
                        chain = chain @ trans[j]
                    raw[b, h, t, i] = r[b, t, h] @ chain @ k[b, i, h]
    torch.testing.assert_close(cache[_attn()].double(), _normalise(raw), rtol=1e-5, atol=1e-6)


def test_the_unnormalised_weights_reproduce_the_wkv_output(rwkv, monkeypatch):
    """y_t = Σ_i α_raw[t,i] v_i exactly (zero incoming state): α is the WKV's own mixing of
    the values. Checked in fp64 by capturing α_raw before the normalisation."""
    from torch_mi.backends.rwkv import effective_attn, wkv

    seen = {}
    monkeypatch.setattr(effective_attn, "normalise", lambda raw: seen.setdefault("raw", raw))
    fn = wkv.wkv6 if rwkv.version == "v6" else wkv.wkv7
    module = time_mix6 if rwkv.version == "v6" else time_mix7
    name = "wkv6" if rwkv.version == "v6" else "wkv7"

    def spy(*args):
        y, state = fn(*args)
        seen.setdefault("y", y)
        seen.setdefault("v", args[2] if rwkv.version == "v6" else args[3])
        return y, state

    monkeypatch.setattr(module, name, spy)
    backend = copy.deepcopy(rwkv.model.backend).double()
    backend.forward(sample_ids(1, S), mi.HookSpec().capture(_attn(0)))
    y = torch.einsum("bhts,bshd->bthd", seen["raw"], seen["v"].double())
    torch.testing.assert_close(y, seen["y"], rtol=1e-10, atol=1e-10)


def test_a_knocked_out_source_gets_no_later_attention(rwkv):
    p = 2
    knock = mi.HookSpec().set_state_knockout(mi.StateKnockoutSpec().position(p).layer(LAYER))
    attn = _capture(rwkv.model, sample_ids(B, S), spec=knock)[_attn()]
    assert torch.equal(attn[:, :, p + 1:, p], torch.zeros_like(attn[:, :, p + 1:, p]))
    if rwkv.version == "v7":  # V7 reads the updated state: the token loses itself too
        assert bool((attn[:, :, p, p] == 0).all())
    base = _capture(rwkv.model, sample_ids(B, S))[_attn()]
    assert torch.equal(attn[:, :, :p], base[:, :, :p])


def test_computed_only_when_captured(rwkv, monkeypatch):
    module = time_mix6 if rwkv.version == "v6" else time_mix7
    name = "effective_attn_v6" if rwkv.version == "v6" else "effective_attn_v7"
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or real(*a))
    model, ids = rwkv.model, sample_ids(B, S)
    others = [p for p in model.hook_points() if p.variant != "RwkvEffectiveAttn"]
    model.forward(ids)
    model.forward(ids, mi.HookSpec())
    model.forward(ids, mi.HookSpec().capture(*others))
    model.forward(ids, mi.HookSpec().set_state_knockout(mi.StateKnockoutSpec().position(0)))
    assert calls == []
    model.forward(ids, mi.HookSpec().capture(_attn(0), _attn(2)))
    assert len(calls) == 2


def test_an_intervention_on_it_is_refused(rwkv):
    state = rwkv.model.make_state()
    spec = mi.HookSpec().intervene(_attn(), mi.Intervention.Zero)
    with pytest.raises(mi.HookError, match="read-only"):
        rwkv.model.forward(sample_ids(B, S), spec, state=state)
    assert state.is_empty()
    with pytest.raises(mi.HookError, match="out of range"):
        rwkv.model.forward(sample_ids(B, S), mi.HookSpec().capture(_attn(9)))


def test_it_takes_gradients(rwkv):
    """keep_grad: the captured pattern is part of the graph back to the residual stream."""
    spec = mi.HookSpec(keep_grad=True).capture(_attn(), mi.HookPoint.ResidPre(LAYER))
    cache = rwkv.model.forward(sample_ids(1, S), spec)
    cache[_attn()][..., -1, 0].sum().backward()  # (a whole row sums to 1: no gradient)
    grad = cache[mi.HookPoint.ResidPre(LAYER)].grad
    assert grad is not None and bool(grad.abs().sum() > 0)
