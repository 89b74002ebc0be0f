"""Which way round ``W_skip`` is applied.

circuit-tracer 0.5.0: a per-layer transcoder computes its skip as ``x @ W_skip.T``
(``SingleLayerTranscoder.compute_skip``) and stores that same matrix in
``layer_{l}.safetensors``; a cross-layer transcoder object computes ``x @ W_skip[l]`` (no
transpose), but its on-disk format carries no skip at all (``load_clt`` reads none and
``to_safetensors`` writes none). The oracles below are those formulas, written by hand on
tensors read straight from the files, with a strongly non-symmetric ``W_skip`` so the
wrong orientation is far off (each test also checks that it is).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

import torch_mi as mi
from tests.attribution.transcoders import encode, make_clt, make_plt, raw_weights
from torch_mi.attribution import replacement_forward
from torch_mi.attribution.replacement import skip_matrices
from torch_mi.dictionaries import CrossLayerTranscoder
from torch_mi.dictionaries.splice import splice, splice_point
from torch_mi.errors import ConfigError

IDS = [1, 40, 41, 42, 43, 44, 45]


def far(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) > 0.1 * float(b.abs().max())


@pytest.fixture(scope="module")
def plt(loaded, tmp_path_factory):
    """The tiny llama and per-layer transcoders whose W_skip is made strictly upper
    triangular (W_skip != W_skip.T by as much as W_skip itself)."""
    model = loaded["llama"]
    folder = make_plt(tmp_path_factory.mktemp("plt"), model.num_layers, model.hidden_size)
    for layer in range(model.num_layers):
        path = folder / f"layer_{layer}.safetensors"
        t = load_file(str(path))
        t["W_skip"] = torch.triu(t["W_skip"], diagonal=1).contiguous() * 3
        save_file(t, str(path))
    w = raw_weights(folder, model.num_layers)
    for ws in w["W_skip"]:
        assert far(ws, ws.T)
    return model, CrossLayerTranscoder.from_local(folder), w


def test_reconstruct_applies_x_times_w_skip_transposed(plt):
    model, clt, w = plt
    point = clt.config.input_point(1)
    x = model.forward(torch.tensor([IDS]), mi.HookSpec().capture(point))[point][0]  # [S, D]
    acts = encode(w, 1, x)
    got = clt.reconstruct({1: acts}, 1, inputs=x)
    base = acts @ w["W_dec"][1][:, 0] + w["b_dec"][1]
    assert_close(got, base + x @ w["W_skip"][1].T, rtol=1e-5, atol=1e-5)
    assert far(got, base + x @ w["W_skip"][1])


def test_splice_reconstruction_applies_x_times_w_skip_transposed(plt):
    model, clt, w = plt
    c, layer = clt.config, 1
    spec = mi.HookSpec().capture(c.input_point(layer))
    splice(spec, clt, use_error_term=True, capture=("recons",))
    cache = model.forward(torch.tensor([IDS]), spec)
    x = cache[c.input_point(layer)][0]
    got = cache[splice_point(c.output_point(layer), "hook_sae_recons")][0]
    base = encode(w, layer, x) @ w["W_dec"][layer][:, 0] + w["b_dec"][layer]
    assert_close(got, base + x @ w["W_skip"][layer].T, rtol=1e-4, atol=1e-5)
    assert far(got, base + x @ w["W_skip"][layer])


def test_replacement_gradient_through_the_skip(plt):
    """The linearised MLP output is x @ W_skip.T (+ a constant): a gradient v at the
    output reaches the input as v @ W_skip."""
    model, clt, w = plt
    _, tape = replacement_forward(model, torch.tensor([IDS]), clt)
    v = torch.randn(tape.outputs[1].shape, generator=torch.Generator().manual_seed(0))
    (got,) = torch.autograd.grad(tape.outputs[1], tape.inputs[1], v)
    assert_close(got, v @ w["W_skip"][1], rtol=1e-5, atol=1e-6)
    assert far(got, v @ w["W_skip"][1].T)


def test_cross_layer_files_carry_no_skip(loaded, tmp_path):
    """As circuit-tracer's load_clt: the split CLT layout has no skip to apply."""
    model = loaded["llama"]
    clt = CrossLayerTranscoder.from_local(make_clt(tmp_path, model.num_layers,
                                                   model.hidden_size))
    assert not clt.config.has_skip
    assert skip_matrices(clt) == [None] * model.num_layers
    with pytest.raises(ConfigError, match="no skip matrix"):
        clt.load_skip_matrix(0)
