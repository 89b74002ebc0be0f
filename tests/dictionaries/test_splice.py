"""Splicing SAEs and transcoders into the forward: exactness with the error term, the
reconstruction forward by hand (plain Replace of tensors computed from the formulas),
feature edits, captures of the splice's internals, typed errors."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.dictionaries.clt_files import write_clt, write_plt
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
from torch_mi.errors import HookError, InterventionError

HOOK = "blocks.0.hook_resid_post"
ATOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def sae_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("saes")
    t = write_saelens(root / "resid", HOOK)
    return root, t


def _logits(model, ids, spec=None):
    with torch.no_grad():
        return model.forward(ids, spec).output()


def test_error_term_keeps_the_forward_and_reconstruction_equals_hand_replace(
        loaded, tiny_models, sae_files):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    root, t = sae_files
    sae = SparseAutoencoder.from_local(root / "resid")
    plain = _logits(model, ids)
    exact = _logits(model, ids, splice(mi.HookSpec(), sae, use_error_term=True))
    torch.testing.assert_close(exact, plain, **ATOL)
    # Without the error term: the forward where the activation is replaced by the hand
    # reconstruction (a plain Replace of a tensor computed from the SAE formula).
    x = model.forward(ids, mi.HookSpec().capture(HOOK))[HOOK]
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Replace(
        hand_recons(t, x))))
    spliced = _logits(model, ids, splice(mi.HookSpec(), sae))
    torch.testing.assert_close(spliced, oracle, **ATOL)
    assert (spliced - plain).abs().max() > 1e-3          # the splice did change the forward


def test_captures_hold_the_saelens_internals(loaded, tiny_models, sae_files):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    root, t = sae_files
    sae = SparseAutoencoder.from_local(root / "resid")
    spec = splice(mi.HookSpec().capture(HOOK), sae, use_error_term=True, capture=True)
    cache = model.forward(ids, spec)
    x = cache[HOOK]                                      # captured before the splice
    names = {n: cache[splice_point(HOOK, n)] for n in SPLICE_NAMES}
    torch.testing.assert_close(names["hook_sae_input"], x, rtol=0, atol=0)
    torch.testing.assert_close(names["hook_sae_acts_post"], hand_encode(t, x), **ATOL)
    torch.testing.assert_close(names["hook_sae_acts_post"], sae.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(names["hook_sae_acts_pre"],
                               (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], **ATOL)
    torch.testing.assert_close(names["hook_sae_recons"], hand_recons(t, x), **ATOL)
    torch.testing.assert_close(names["hook_sae_error"], x - hand_recons(t, x), **ATOL)
    torch.testing.assert_close(names["hook_sae_output"], x, **ATOL)
    only = model.forward(ids, splice(mi.HookSpec(), sae, capture=["acts_post"]))
    assert splice_point(HOOK, "hook_sae_acts_post") in only
    assert splice_point(HOOK, "hook_sae_recons") not in only


def test_ablating_a_feature_subtracts_its_decoder_contribution(loaded, tiny_models, sae_files):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    root, t = sae_files
    sae = SparseAutoencoder.from_local(root / "resid")
    x = model.forward(ids, mi.HookSpec().capture(HOOK))[HOOK]
    acts = hand_encode(t, x)                             # [B,S,F]
    pos = 3
    feature = int(acts[0, pos].argmax())                 # an active feature
    assert acts[0, pos, feature] > 0
    delta = torch.zeros_like(x)
    delta[:, pos] = -acts[:, pos, feature, None] * t["W_dec"][feature]
    oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Add(delta)))
    edit = FeatureEdit.ablate(feature, positions=pos)
    got = _logits(model, ids, splice(mi.HookSpec(), sae, use_error_term=True, edits=[edit]))
    torch.testing.assert_close(got, oracle, **ATOL)
    # clamp / scale / add are the same contribution arithmetic: (new - old) * W_dec[f]
    for edit, new in ((FeatureEdit.clamp(feature, 2.5, pos), torch.full_like(acts[:, pos, feature], 2.5)),
                      (FeatureEdit.scale(feature, 3.0, [pos]), 3 * acts[:, pos, feature]),
                      (FeatureEdit.add(feature, -1.0, pos), acts[:, pos, feature] - 1)):
        delta = torch.zeros_like(x)
        delta[:, pos] = (new - acts[:, pos, feature])[:, None] * t["W_dec"][feature]
        oracle = _logits(model, ids, mi.HookSpec().intervene(HOOK, mi.Intervention.Add(delta)))
        got = _logits(model, ids, splice(mi.HookSpec(), sae, use_error_term=True, edits=[edit]))
        torch.testing.assert_close(got, oracle, **ATOL)


def test_hook_z_sae_and_two_saes_at_once(loaded, tiny_models, tmp_path):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids   # 4 heads of 16
    z_hook, resid = "blocks.1.attn.hook_z", "blocks.1.hook_resid_post"
    tz = write_saelens(tmp_path / "z", z_hook, seed=1)
    tr = write_saelens(tmp_path / "r", resid, seed=2)
    z_sae = SparseAutoencoder.from_local(tmp_path / "z")
    r_sae = SparseAutoencoder.from_local(tmp_path / "r")
    plain = _logits(model, ids)
    spec = splice(splice(mi.HookSpec(), z_sae, use_error_term=True), r_sae, use_error_term=True)
    torch.testing.assert_close(_logits(model, ids, spec), plain, **ATOL)
    # Both without error terms == hand: replace z, then (downstream) resid_post.
    z = model.forward(ids, mi.HookSpec().capture(z_hook))[z_hook]            # [B,S,H,dh]
    z_rec = hand_recons(tz, z.flatten(2)).reshape(z.shape)
    first = mi.HookSpec().intervene(z_hook, mi.Intervention.Replace(z_rec))
    r = model.forward(ids, first.capture(resid))[resid]
    oracle = _logits(model, ids, mi.HookSpec().intervene(z_hook, mi.Intervention.Replace(z_rec))
                     .intervene(resid, mi.Intervention.Replace(hand_recons(tr, r))))
    got = _logits(model, ids, splice(splice(mi.HookSpec(), z_sae), r_sae))
    torch.testing.assert_close(got, oracle, **ATOL)


def _hand_clt_forward(model, ids, t, L):
    """Layer by layer: encode resid_mid, replace mlp_out by sum_{s<=l} f_s W_dec_s[:, l-s] + b_dec_l."""
    spec, acts = mi.HookSpec(), {}
    for layer in range(L):
        mid = f"blocks.{layer}.hook_resid_mid"
        x = model.forward(ids, _copy(spec).capture(mid))[mid]
        acts[layer] = torch.relu(x @ t["W_enc"][layer].T + t["b_enc"][layer])
        rec = t["b_dec"][layer] + sum(acts[s] @ t["W_dec"][s][:, layer - s] for s in range(layer + 1))
        spec.intervene(f"blocks.{layer}.hook_mlp_out", mi.Intervention.Replace(rec))
    return _logits(model, ids, spec), acts


def _copy(spec):
    return mi.HookSpec().extend(spec)


def test_clt_splice_writes_every_downstream_layer(loaded, tiny_models, tmp_path):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids   # 2 layers, D 64
    t = write_clt(tmp_path / "clt", L=2, F=16, D=64)
    clt = CrossLayerTranscoder.from_local(tmp_path / "clt")
    torch.testing.assert_close(_logits(model, ids, splice(mi.HookSpec(), clt, use_error_term=True)),
                               _logits(model, ids), **ATOL)
    oracle, acts = _hand_clt_forward(model, ids, t, 2)
    cache = model.forward(ids, splice(mi.HookSpec(), clt, capture=True))
    torch.testing.assert_close(cache.output(), oracle, **ATOL)
    for layer in range(2):
        got = cache[splice_point(f"blocks.{layer}.hook_resid_mid", "hook_sae_acts_post")]
        torch.testing.assert_close(got, acts[layer], **ATOL)
    assert splice_point("blocks.1.hook_mlp_out", "hook_sae_recons") in cache
    # Ablating a layer-0 feature removes its writes at layers 0 AND 1.
    f = int(acts[0][0, 2].argmax())
    delta = {layer: torch.zeros(*ids.shape, 64) for layer in range(2)}
    for layer in range(2):
        delta[layer][:, 2] = -acts[0][:, 2, f, None] * t["W_dec"][0][f, layer]
    oracle = _logits(model, ids, mi.HookSpec()
                     .intervene("blocks.0.hook_mlp_out", mi.Intervention.Add(delta[0]))
                     .intervene("blocks.1.hook_mlp_out", mi.Intervention.Add(delta[1])))
    got = _logits(model, ids, splice(mi.HookSpec(), clt, use_error_term=True,
                                     edits=[FeatureEdit.ablate(CltFeatureId(0, f), 2)]))
    torch.testing.assert_close(got, oracle, **ATOL)


def test_per_layer_transcoder_with_skip(loaded, tiny_models, tmp_path):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    t = write_plt(tmp_path / "plt", L=2, F=16, D=64, skip=True)["layers"]
    plt = CrossLayerTranscoder.from_local(tmp_path / "plt")
    torch.testing.assert_close(_logits(model, ids, splice(mi.HookSpec(), plt, use_error_term=True)),
                               _logits(model, ids), **ATOL)
    mid, out = "blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out"
    x = model.forward(ids, mi.HookSpec().capture(mid))[mid]
    w = t[1]
    rec = torch.relu(x @ w["W_enc"].T + w["b_enc"]) @ w["W_dec"] + w["b_dec"] + x @ w["W_skip"].T
    oracle = _logits(model, ids, mi.HookSpec().intervene(out, mi.Intervention.Replace(rec)))
    torch.testing.assert_close(_logits(model, ids, splice(mi.HookSpec(), plt, layers=[1])),
                               oracle, **ATOL)


def test_splice_errors_are_typed(loaded, tiny_models, tmp_path, sae_files):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    root, _ = sae_files
    sae = SparseAutoencoder.from_local(root / "resid")
    write_saelens(tmp_path / "narrow", HOOK, d_in=32, d_sae=64)
    narrow = SparseAutoencoder.from_local(tmp_path / "narrow")
    with pytest.raises(InterventionError, match="d_in=32"):
        model.forward(ids, splice(mi.HookSpec(), narrow))
    write_saelens(tmp_path / "nohook", "blocks.0.hook_nonexistent")
    with pytest.raises(HookError, match="hook_nonexistent"):
        model.forward(ids, splice(mi.HookSpec(), SparseAutoencoder.from_local(tmp_path / "nohook")))
    with pytest.raises(InterventionError, match="out of range for d_sae=256"):
        splice(mi.HookSpec(), sae, edits=[FeatureEdit.ablate(256)])
    with pytest.raises(InterventionError, match="transcoder feature"):
        splice(mi.HookSpec(), sae, edits=[FeatureEdit.ablate(CltFeatureId(0, 1))])
    with pytest.raises(InterventionError, match="unknown splice capture"):
        splice(mi.HookSpec(), sae, capture=["acts"])
    with pytest.raises(InterventionError, match="finite"):
        FeatureEdit.clamp(1, float("nan"))
    with pytest.raises(InterventionError, match="position 99"):
        model.forward(ids, splice(mi.HookSpec(), sae, edits=[FeatureEdit.ablate(1, 99)]))
    with pytest.raises(InterventionError, match="SparseAutoencoder or a CrossLayerTranscoder"):
        splice(mi.HookSpec(), object())
    write_clt(tmp_path / "clt", L=2, F=16, D=64)
    clt = CrossLayerTranscoder.from_local(tmp_path / "clt")
    with pytest.raises(InterventionError, match="layer 5 is out of range"):
        splice(mi.HookSpec(), clt, layers=[5])
    with pytest.raises(InterventionError, match="CltFeatureId"):
        splice(mi.HookSpec(), clt, edits=[FeatureEdit.ablate(3)])
    write_clt(tmp_path / "clt8", L=2, F=16, D=8)                   # d_model 8 != 64
    with pytest.raises(InterventionError, match="d_model=8"):
        model.forward(ids, splice(mi.HookSpec(), CrossLayerTranscoder.from_local(tmp_path / "clt8")))
