"""Transcoders saved by circuit-tracer itself load here and encode / reconstruct as it does.

The folders under tests/golden/circuit_tracer/ were written by circuit-tracer 0.5.0 in its
own venv (tests/oracles/circuit_tracer_golden.py): a cross-layer transcoder and a per-layer
set, each with JumpReLU (thresholds partly negative) and with ReLU, the set with ``W_skip``,
put through circuit-tracer's cache writer (``config.yaml`` without a ``transcoders:`` list
plus its per-layer files), and circuit-tracer's pre-activations, encodings and
reconstructions (CLT: cross-layer sums) on random inputs ``x`` [L, S, D].
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import torch_mi as mi
from torch_mi.dictionaries import CrossLayerTranscoder
from torch_mi.dictionaries.clt_config import TranscoderSchema
from torch_mi.dictionaries.types import CltFeatureId
from torch_mi.errors import ConfigError, InterventionError, WeightError
from torch_mi.hooks.points import HookPoint

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "circuit_tracer"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "config.yaml").is_file())
TOL = dict(rtol=1e-5, atol=1e-5)
L, D, F = 3, 64, 32


def _open(case: str) -> tuple[CrossLayerTranscoder, dict[str, torch.Tensor]]:
    return (CrossLayerTranscoder.from_local(GOLDEN / case),
            load_file(str(GOLDEN / case / "io.safetensors")))


def test_cases_cover_clt_and_plt_with_skip_and_jumprelu():
    assert CASES == ["clt_jumprelu", "clt_relu", "plt_jumprelu_skip", "plt_relu"]
    size = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert size < 1 << 20


@pytest.mark.parametrize("case", CASES)
def test_config_follows_circuit_tracer_files(case: str):
    c = CrossLayerTranscoder.from_local(GOLDEN / case).config
    cross = case.startswith("clt")
    assert c.schema is (TranscoderSchema.CLT_SPLIT if cross else TranscoderSchema.PLT_BUNDLE)
    assert (c.n_layers, c.d_model, c.n_features_per_layer) == (L, D, F)
    assert c.is_jump_relu == ("jumprelu" in case)
    assert c.has_skip == case.endswith("skip")
    assert c.model_name == "tiny-llama"
    for layer in range(L):
        expected_in = (HookPoint.ResidMid(layer) if cross
                       else HookPoint.parse(f"blocks.{layer}.ln2.hook_normalized"))
        assert c.input_point(layer) == expected_in and not c.input_point(layer).is_custom
        assert c.output_point(layer) == HookPoint.MlpOut(layer)
    # the config.yaml given directly is the same transcoder as its folder
    assert CrossLayerTranscoder.from_local(GOLDEN / case / "config.yaml").config == c


@pytest.mark.parametrize("case", CASES)
def test_encodings_match_circuit_tracer(case: str):
    model, io = _open(case)
    x = io["x"]  # [L,S,D]
    for layer in range(L):
        torch.testing.assert_close(model.encode_pre_activation(x[layer], layer),
                                   io["pre"][layer], **TOL)
        torch.testing.assert_close(model.encode_dense(x[layer], layer), io["feats"][layer], **TOL)
        # one position through the sparse path: same active set and values
        sparse = model.encode(x[layer, 3], layer)
        dense = io["feats"][layer, 3]
        assert sorted(f.index for f, _ in sparse) == torch.nonzero(dense).flatten().tolist()
        assert all(f.layer == layer for f, _ in sparse)
        torch.testing.assert_close(sparse.to_dense(F), dense, **TOL)


def test_jumprelu_passes_negative_pre_activations_above_the_threshold():
    """circuit-tracer's JumpReLU is ``x * (x > threshold)``: no ReLU inside."""
    for case in ("clt_jumprelu", "plt_jumprelu_skip"):
        model, io = _open(case)
        assert (io["feats"] < 0).any(), f"{case}: the golden files must exercise this"
        ours = torch.stack([model.encode_dense(io["x"][i], i) for i in range(L)])
        torch.testing.assert_close(ours, io["feats"], **TOL)
        assert torch.equal(ours < 0, io["feats"] < 0)


@pytest.mark.parametrize("case", CASES)
def test_reconstructions_match_circuit_tracer(case: str):
    model, io = _open(case)
    x, feats = io["x"], io["feats"]
    acts = {layer: feats[layer] for layer in range(L)}
    for layer in range(L):
        torch.testing.assert_close(model.reconstruct(acts, layer, x[layer]), io["recon"][layer],
                                   **TOL)
    # end to end: our own encodings, streamed layer by layer
    torch.testing.assert_close(model.forward(x), io["recon"], **TOL)


def test_clt_reconstruction_is_the_sum_over_source_layers():
    """Each layer's output is circuit-tracer's, and dropping a source layer changes it
    by exactly that layer's decoder contribution (read here with safetensors)."""
    model, io = _open("clt_jumprelu")
    feats = io["feats"]
    acts = {layer: feats[layer] for layer in range(L)}
    w_dec0 = load_file(str(GOLDEN / "clt_jumprelu" / "W_dec_0.safetensors"))["W_dec_0"]
    assert w_dec0.shape == (F, L, D)
    without = {**acts, 0: torch.zeros_like(feats[0])}
    for target in range(L):
        delta = model.reconstruct(acts, target) - model.reconstruct(without, target)
        torch.testing.assert_close(delta, feats[0] @ w_dec0[:, target], **TOL)
    f = CltFeatureId(0, int(torch.nonzero(feats[0, 2])[0]))
    torch.testing.assert_close(model.decoder_vector(f, 2), w_dec0[f.index, 2], rtol=0, atol=0)


def test_plt_skip_matrix_is_applied_as_circuit_tracer_does():
    model, io = _open("plt_jumprelu_skip")
    w_skip = load_file(str(GOLDEN / "plt_jumprelu_skip" / "layer_1.safetensors"))["W_skip"]
    torch.testing.assert_close(model.load_skip_matrix(1), w_skip, rtol=0, atol=0)
    x, feats = io["x"], io["feats"]
    no_skip = model.reconstruct({1: feats[1]}, 1, torch.zeros_like(x[1]))
    torch.testing.assert_close(io["recon"][1] - no_skip, x[1] @ w_skip.T, **TOL)


def test_hooks_named_in_the_config_are_transformerlens_tensors(tiny_models, loaded):
    """``feature_input_hook`` / ``feature_output_hook`` of both configs capture exactly the
    tensors TL 3.9's HookedTransformer caches under those strings (tiny llama, d_model 64)."""
    pytest.importorskip("transformer_lens")
    from tests.helpers.transformerlens import hooked_transformer

    tiny, model = tiny_models["llama"], loaded["llama"]
    with torch.no_grad():
        _, tl_cache = hooked_transformer("llama", tiny.hf).run_with_cache(tiny.input_ids)
    for case in ("clt_relu", "plt_relu"):
        transcoder, _ = _open(case)
        c = transcoder.config
        for layer in range(2):  # the tiny llama's layers (the transcoders have 3)
            points = {c.input_point(layer): f"blocks.{layer}.{c.feature_input_hook}",
                      c.output_point(layer): f"blocks.{layer}.{c.feature_output_hook}"}
            cache = model.forward(tiny.input_ids, mi.HookSpec().capture(*points))
            for point, tl_key in points.items():
                torch.testing.assert_close(cache[point], tl_cache[tl_key], **TOL)
            # and the transcoder takes what is captured there: [B,S,D] -> [B,S,F]
            acts = transcoder.encode_dense(cache[c.input_point(layer)], layer)
            assert acts.shape == (*tiny.input_ids.shape, F)


# ---- bad input --------------------------------------------------------------------------
def test_bad_input_is_refused():
    model, io = _open("plt_jumprelu_skip")
    x = io["x"]
    with pytest.raises(InterventionError, match="skip connection"):
        model.reconstruct({0: io["feats"][0]}, 0)
    with pytest.raises(InterventionError, match="d_model=64"):
        model.encode_dense(torch.randn(3, D + 1), 0)
    with pytest.raises(InterventionError, match="per-layer transcoder"):
        model.decoder_vector(CltFeatureId(0, 1), 1)
    clt, _ = _open("clt_relu")
    with pytest.raises(InterventionError, match="missing"):
        clt.reconstruct({0: io["feats"][0]}, 1)
    with pytest.raises(InterventionError, match="out of range"):
        clt.encode_dense(x[0], L)
    with pytest.raises(ConfigError, match="no skip matrix"):
        clt.load_skip_matrix(0)


def test_broken_circuit_tracer_folders_are_refused(tmp_path):
    # cache layout with a layer file missing
    broken = tmp_path / "missing"
    shutil.copytree(GOLDEN / "plt_relu", broken)
    (broken / "layer_1.safetensors").unlink()
    with pytest.raises(WeightError, match=r"missing for layers \[1\]"):
        CrossLayerTranscoder.from_local(broken)
    # a transcoder_set config.yaml with neither a list nor layer files next to it
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(GOLDEN / "plt_relu" / "config.yaml", empty / "config.yaml")
    for path in (empty, empty / "config.yaml"):
        with pytest.raises(ConfigError, match="layer_\\{l\\}.safetensors"):
            CrossLayerTranscoder.from_local(path)
    # a CLT whose decoder belongs to another transcoder
    mixed = tmp_path / "mixed"
    shutil.copytree(GOLDEN / "clt_relu", mixed)
    shutil.copy(GOLDEN / "clt_relu" / "W_dec_0.safetensors", mixed / "W_dec_1.safetensors")
    with pytest.raises(WeightError):
        CrossLayerTranscoder.from_local(mixed)
    # JumpReLU thresholds stripped from one layer
    jump = tmp_path / "jump"
    shutil.copytree(GOLDEN / "plt_jumprelu_skip", jump)
    layer = load_file(str(jump / "layer_2.safetensors"))
    del layer["activation_function.threshold"]
    save_file(layer, str(jump / "layer_2.safetensors"))
    with pytest.raises(WeightError, match="threshold"):
        CrossLayerTranscoder.from_local(jump)
