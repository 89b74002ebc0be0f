"""feature_intervention: setting a feature equals adding (value - activation) x its decoder
rows to the MLP outputs it writes (hand-written from the safetensors files, patterns frozen
by HookSpec Replace); activations are re-encoded from the changed stream."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import torch_mi as mi
from tests.attribution.transcoders import encode, make_clt, raw_weights
from torch_mi.attribution import feature_intervention
from torch_mi.errors import InterventionError

IDS = [1, 50, 51, 52, 53, 54]


@pytest.fixture(scope="module")
def setup(loaded, tmp_path_factory):
    model = loaded["llama"]
    folder = make_clt(tmp_path_factory.mktemp("clt"), model.num_layers, model.hidden_size)
    return model, folder, raw_weights(folder, model.num_layers)


@pytest.mark.parametrize("freeze", [True, False])
def test_set_feature_equals_decoder_write(setup, freeze):
    model, folder, w = setup
    n_layers, ids = model.num_layers, torch.tensor([IDS])
    pats = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    clean = model.forward(ids, mi.HookSpec().capture("blocks.0.hook_resid_mid", *pats))
    a = encode(w, 0, clean["blocks.0.hook_resid_mid"][0])  # [S, F]
    pos, feat, value = 3, int(a[3].argmax()), 3.0
    out = feature_intervention(model, ids, [(0, pos, feat, value)], folder,
                               freeze_attention=freeze)
    spec = mi.HookSpec()
    if freeze:
        for p in pats:
            spec.intervene(p, mi.Intervention.Replace(clean[p]))
    for layer in range(n_layers):
        delta = torch.zeros(1, len(IDS), model.hidden_size)
        delta[0, pos] = (value - a[pos, feat]) * w["W_dec"][0][feat, layer]
        spec.intervene(f"blocks.{layer}.hook_mlp_out", mi.Intervention.Add(delta))
    spec.capture("blocks.1.hook_resid_mid")
    want = model.forward(ids, spec)
    assert_close(out.logits, want.output(), rtol=1e-4, atol=1e-4)
    acts1 = encode(w, 1, want["blocks.1.hook_resid_mid"][0])
    acts1[0] = 0
    assert_close(out.activations[1], acts1, rtol=1e-4, atol=1e-5)
    assert (out.logits - model(ids).output()).abs().max() > 1e-3  # it did something


def test_no_intervention_is_the_model(setup):
    model, folder, _ = setup
    out = feature_intervention(model, IDS, [], folder)
    assert_close(out.logits, model(torch.tensor([IDS])).output(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("bad", "match"), [
    ((0, 99, 1, 1.0), "position"), ((9, 1, 1, 1.0), "layer"), ((0, 1, 10_000, 1.0), "feature"),
    ((0, 1, 1), "layer, position, feature, value"), ((0, 1, 1, float("nan")), "finite"),
])
def test_bad_interventions(setup, bad, match):
    model, folder, _ = setup
    with pytest.raises(InterventionError, match=match):
        feature_intervention(model, IDS, [bad], folder)


@pytest.mark.parametrize("value", [0.0, 2.5])
def test_position_zero_adds_value_times_decoder(setup, value):
    """circuit-tracer's rule at the zeroed BOS: its cached activation there is 0, so the
    delta written is value x decoder rows (hand formula from the files), whatever the
    feature's real activation; value 0 is a no-op."""
    model, folder, w = setup
    n_layers, ids = model.num_layers, torch.tensor([IDS])
    pats = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    clean = model.forward(ids, mi.HookSpec().capture("blocks.0.hook_resid_mid", *pats))
    a = encode(w, 0, clean["blocks.0.hook_resid_mid"][0])  # [S, F]
    feat = int(a[0].abs().argmax())
    assert float(a[0, feat]) != 0.0  # really active at BOS: clamping it would differ
    out = feature_intervention(model, ids, [(0, 0, feat, value)], folder)
    spec = mi.HookSpec()
    for p in pats:
        spec.intervene(p, mi.Intervention.Replace(clean[p]))
    for layer in range(n_layers):
        delta = torch.zeros(1, len(IDS), model.hidden_size)
        delta[0, 0] = value * w["W_dec"][0][feat, layer]
        spec.intervene(f"blocks.{layer}.hook_mlp_out", mi.Intervention.Add(delta))
    assert_close(out.logits, model.forward(ids, spec).output(), rtol=1e-4, atol=1e-4)
    assert torch.all(out.activations[:, 0] == 0)
    if value == 0.0:
        assert_close(out.logits, model(ids).output(), rtol=1e-5, atol=1e-5)


def test_bad_zero_positions(setup):
    model, folder, _ = setup
    for bad in (-1, 1.5, True):
        with pytest.raises(InterventionError, match="zero_positions"):
            feature_intervention(model, IDS, [(0, 1, 1, 1.0)], folder, zero_positions=bad)
