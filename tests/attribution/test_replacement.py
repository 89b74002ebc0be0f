"""The local replacement model (transcoders spliced with error terms, patterns and norm
denominators frozen, MLPs linearised) computes the model's own logits on every tiny
family, checked against HF transformers; and its gradient really stops at the frozen
points (checked against a hand-written frozen Jacobian of the final norm)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from tests.attribution.transcoders import make_clt, make_plt
from tests.helpers.tiny_models import VARIANTS, hf_run
from torch_mi.attribution import replacement_forward
from torch_mi.dictionaries import CrossLayerTranscoder
from torch_mi.errors import ConfigError


@pytest.mark.parametrize("variant", VARIANTS)
def test_replacement_logits_equal_hf(variant, tiny_models, loaded, tmp_path):
    tiny, model = tiny_models[variant], loaded[variant]
    n_layers, d = model.num_layers, model.hidden_size
    make = make_plt if variant in ("gemma3", "qwen3", "gemma2") else make_clt
    clt = CrossLayerTranscoder.from_local(make(tmp_path / "tc", n_layers, d))
    ids = tiny.input_ids[:, :12]
    with torch.no_grad():
        expected = tiny.hf(ids).logits
    logits, tape = replacement_forward(model, ids, clt, splice_transcoders=True)
    # 1e-5, relative to the logits' scale: with a frozen denominator the norms take their
    # hooked path (x / scale, then the gain), one ulp away from the fused kernel; gemma2's
    # variant (norm gain ~41, logits up to 26) turns that into 7e-5 absolute.
    scale = max(1.0, float(expected.abs().max()))
    assert_close(logits.detach(), expected, rtol=1e-5, atol=1e-5 * scale)
    # the tape holds live graph nodes for every layer
    assert tape.embed.requires_grad and tape.final.requires_grad
    assert sorted(tape.outputs) == list(range(n_layers)) == sorted(tape.inputs)


@pytest.mark.parametrize("variant", ["llama", "gemma2", "starcoder2"])
def test_final_norm_gradient_uses_a_frozen_denominator(variant, tiny_models, loaded, tmp_path):
    """d(v . ln_final(h)) / dh at the last position must be the FROZEN-scale Jacobian:
    gain * v / scale (minus its mean for LayerNorm), not the full norm Jacobian."""
    tiny, model = tiny_models[variant], loaded[variant]
    clt = CrossLayerTranscoder.from_local(
        make_clt(tmp_path / "tc", model.num_layers, model.hidden_size))
    ids = tiny.input_ids[:1, :8]
    _, tape = replacement_forward(model, ids, clt, last_logits_only=True)
    v = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0))
    seed = torch.zeros_like(tape.final)
    seed[0, -1] = v
    last = tape.outputs[model.num_layers - 1]
    (grad,) = torch.autograd.grad(tape.final, last, seed)
    h = hf_run(tiny.hf, ids).last_layer_output  # HF's resid_post of the last layer
    hf_norm = tiny.hf.model.norm
    x = h[0, -1].double()
    if variant == "starcoder2":
        xc = x - x.mean()
        scale = (xc.pow(2).mean() + hf_norm.eps).sqrt()
        gv = hf_norm.weight.double() * v.double()
        expected = (gv - gv.mean()) / scale
    else:
        eps = getattr(hf_norm, "variance_epsilon", getattr(hf_norm, "eps", None))
        scale = (x.pow(2).mean() + eps).sqrt()
        gain = hf_norm.weight.double() + (1.0 if variant == "gemma2" else 0.0)
        expected = gain * v.double() / scale
    assert_close(grad[0, -1].double(), expected, rtol=1e-4, atol=1e-6)
    assert grad[0, :-1].abs().max() == 0  # the last position's norm sees only its own row


def test_replacement_needs_a_transformer_backend_points(loaded, tmp_path):
    model = loaded["llama"]
    with pytest.raises(ConfigError, match="CrossLayerTranscoder"):
        replacement_forward(model, torch.tensor([[1, 5, 6]]), object())
