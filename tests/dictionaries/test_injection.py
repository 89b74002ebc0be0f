"""Feature injection, the suppress + inject protocol and feature edits through a splice,
checked against plain ``Intervention.Add`` of hand-summed decoder vectors."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.dictionaries.clt_files import write_clt, write_plt
from tests.dictionaries.sae_files import hand_encode, write_saelens
from torch_mi.dictionaries import (
    CltFeatureId,
    CrossLayerTranscoder,
    FeatureEdit,
    SaeFeatureId,
    SparseAutoencoder,
    inject,
    intervene_features,
    prepare_hook_injection,
    suppress_and_inject,
)
from torch_mi.errors import InterventionError
from torch_mi.interp.results import kl_divergence

HOOK = "blocks.0.hook_resid_post"
ATOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    root = tmp_path_factory.mktemp("inj")
    t_sae = write_saelens(root / "sae", HOOK)
    t_clt = write_clt(root / "clt", L=2, F=16, D=64)
    return (SparseAutoencoder.from_local(root / "sae"), t_sae,
            CrossLayerTranscoder.from_local(root / "clt"), t_clt)


def _logits(model, ids, spec=None):
    with torch.no_grad():
        return model.forward(ids, spec).output()


def _at(ids, pos, vec):
    delta = torch.zeros(*ids.shape, vec.shape[-1])
    delta[:, pos] = vec
    return delta


def test_strength_zero_is_a_no_op(loaded, tiny_models, dicts):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, _, clt, _ = dicts
    plain = _logits(model, ids)
    for d, feats in ((sae, [3, 7]), (clt, [CltFeatureId(0, 2), CltFeatureId(1, 5)])):
        spec = prepare_hook_injection(d, feats, strength=0.0, position=4)
        torch.testing.assert_close(_logits(model, ids, spec), plain, rtol=0, atol=0)
        result = inject(model, ids, d, feats, strength=0.0)
        assert result.kl_divergence() == 0.0


def test_sae_injection_adds_scaled_decoder_vectors(loaded, tiny_models, dicts):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, t, _, _ = dicts
    vec = 4.0 * (t["W_dec"][3] + 0.5 * t["W_dec"][7])
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Add(_at(ids, 5, vec))))
    spec = prepare_hook_injection(sae, [3, (SaeFeatureId(7), 0.5)], strength=4.0, position=5)
    torch.testing.assert_close(_logits(model, ids, spec), oracle, **ATOL)
    everywhere = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Add(vec)))
    torch.testing.assert_close(
        _logits(model, ids, prepare_hook_injection(sae, [3, (7, 0.5)], strength=4.0)),
        everywhere, **ATOL)


def test_clt_injection_writes_each_target_layer_like_the_seed(loaded, tiny_models, dicts):
    """The seed added the per-target sum at ResidPost(l); we add it at hook_mlp_out(l)."""
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    _, _, clt, t = dicts
    f0, f1 = CltFeatureId(0, 2), CltFeatureId(1, 5)
    vec0 = 3.0 * t["W_dec"][0][2, 0]
    vec1 = 3.0 * (t["W_dec"][0][2, 1] + t["W_dec"][1][5, 0])
    oracle = _logits(model, ids, mi.HookSpec()
                     .intervene("blocks.0.hook_resid_post", mi.Intervention.Add(_at(ids, 6, vec0)))
                     .intervene("blocks.1.hook_resid_post", mi.Intervention.Add(_at(ids, 6, vec1))))
    got = _logits(model, ids, prepare_hook_injection(clt, [f0, f1], strength=3.0, position=6))
    torch.testing.assert_close(got, oracle, **ATOL)
    only1 = mi.HookSpec().intervene("blocks.1.hook_resid_post", mi.Intervention.Add(_at(ids, 6, vec1)))
    got = prepare_hook_injection(clt, [f0, f1], strength=3.0, position=6, target_layers=[1])
    torch.testing.assert_close(_logits(model, ids, got), _logits(model, ids, only1), **ATOL)


def test_suppress_and_inject_and_the_result(loaded, tiny_models, dicts):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, t, _, _ = dicts
    vec = 10.0 * (t["W_dec"][9] - t["W_dec"][1])
    base = _logits(model, ids)
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Add(_at(ids, -1, vec))))
    result = suppress_and_inject(model, ids, sae, suppress=[1], inject=[9], position=-1)
    torch.testing.assert_close(result.intervened, oracle, **ATOL)
    torch.testing.assert_close(result.baseline, base, rtol=0, atol=0)
    assert result.kl_divergence() == pytest.approx(kl_divergence(base[0, -1], oracle[0, -1]), rel=1e-5)
    assert result.kl_divergence() > 0
    tok = int(base[0, -1].argmax())
    assert result.logit_diff(tok) == pytest.approx(float(base[0, -1, tok] - oracle[0, -1, tok]), abs=1e-5)
    top = result.top_changed_tokens(3)
    assert len(top) == 3 and top[0][3] >= top[1][3] >= top[2][3]
    # the injection is at the last position only: earlier positions are unchanged (causal)
    assert result.at(0, 1).kl_divergence() == 0.0


def test_intervene_features_ablates_through_the_error_term(loaded, tiny_models, dicts):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, t, _, _ = dicts
    x = model.forward(ids, mi.HookSpec().capture(HOOK))[HOOK]
    acts = hand_encode(t, x)
    f = int(acts[0, -1].argmax())
    assert acts[0, -1, f] > 0
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Add(
        -_delta(acts, t, f, ids))))
    result = intervene_features(model, ids, sae, FeatureEdit.ablate(f, positions=-1))
    torch.testing.assert_close(result.intervened, oracle, **ATOL)


def _delta(acts, t, f, ids):
    delta = torch.zeros(*ids.shape, 64)
    delta[:, -1] = acts[:, -1, f, None] * t["W_dec"][f]
    return delta


def test_injection_errors_are_typed(loaded, tiny_models, dicts, tmp_path):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    sae, _, clt, _ = dicts
    with pytest.raises(InterventionError, match="finite"):
        prepare_hook_injection(sae, [1], strength=float("inf"))
    with pytest.raises(InterventionError, match="no features"):
        prepare_hook_injection(sae, [])
    with pytest.raises(InterventionError, match="transcoder feature"):
        prepare_hook_injection(sae, [CltFeatureId(0, 1)])
    with pytest.raises(InterventionError, match="out of range"):
        prepare_hook_injection(sae, [256])
    with pytest.raises(InterventionError, match="CltFeatureId"):
        prepare_hook_injection(clt, [3])
    with pytest.raises(InterventionError, match="none of the features"):
        prepare_hook_injection(clt, [CltFeatureId(1, 0)], target_layers=[0])
    with pytest.raises(InterventionError, match="position 50"):
        model.forward(ids, prepare_hook_injection(sae, [1], position=50))
    write_plt(tmp_path / "plt", L=2, F=16, D=64, skip=False)
    plt = CrossLayerTranscoder.from_local(tmp_path / "plt")
    with pytest.raises(InterventionError, match="none of the features"):
        prepare_hook_injection(plt, [CltFeatureId(0, 1)], target_layers=[1])
    before = mi.HookSpec()
    with pytest.raises(InterventionError):
        prepare_hook_injection(sae, [1, 999], spec=before)
    assert before.num_interventions() == 0            # a failed call leaves the spec as it was
