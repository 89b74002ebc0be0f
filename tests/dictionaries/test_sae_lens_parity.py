"""SAEs saved by sae-lens itself load here and encode / decode exactly as sae-lens does.

The golden folders under tests/golden/sae_lens/ were written by sae-lens 6.54.12 in its
own venv (tests/oracles/sae_lens_golden.py): its saved cfg.json + weights, inputs, and
sae-lens's ``encode``, ``decode`` and forward outputs on them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from torch_mi.dictionaries import NormalizeActivations, SaeArchitecture, SparseAutoencoder, TopKStrategy
from torch_mi.errors import InterventionError
from torch_mi.hooks.points import HookPoint

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "sae_lens"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "cfg.json").is_file())
TOL = dict(rtol=1e-5, atol=1e-5)


def test_every_architecture_sae_lens_writes_is_covered():
    archs = {SparseAutoencoder.from_local(GOLDEN / c).config.architecture for c in CASES}
    assert archs == set(SaeArchitecture)
    assert len(CASES) == 12


@pytest.mark.parametrize("case", CASES)
def test_matches_sae_lens(case: str):
    sae = SparseAutoencoder.from_local(GOLDEN / case)
    io = load_file(str(GOLDEN / case / "io.safetensors"))
    x = io["x"]
    feats = sae.encode(x)
    torch.testing.assert_close(feats, io["feats"], **TOL)
    torch.testing.assert_close(sae.decode(io["feats"], x), io["recons"], **TOL)
    torch.testing.assert_close(sae.reconstruct(x), io["out"], **TOL)
    # one position through encode_sparse: same active set, same values
    pos = x[1, 2]
    sparse = sae.encode_sparse(pos)
    dense = io["feats"][1, 2]
    assert sorted(f.index for f, _ in sparse) == torch.nonzero(dense > 0).flatten().tolist()
    torch.testing.assert_close(sparse.to_dense(sae.d_sae), dense, **TOL)


def test_config_fields_follow_cfg_json():
    std = SparseAutoencoder.from_local(GOLDEN / "standard").config
    assert std.apply_b_dec_to_input and std.hook_point == HookPoint.ResidPost(0)
    nob = SparseAutoencoder.from_local(GOLDEN / "jumprelu_no_bdec_expected_avg").config
    assert not nob.apply_b_dec_to_input
    assert nob.normalize_activations is NormalizeActivations.EXPECTED_AVERAGE_ONLY_IN
    topk = SparseAutoencoder.from_local(GOLDEN / "topk_rescale_layer_norm").config
    assert (topk.k, topk.rescale_acts_by_decoder_norm) == (8, True)
    assert SparseAutoencoder.from_local(GOLDEN / "batchtopk").config.architecture is (
        SaeArchitecture.JUMPRELU)
    z = SparseAutoencoder.from_local(GOLDEN / "hook_z")
    assert z.hook_point == HookPoint.AttnZ(1) and z.config.reshape_hook_z


def test_hook_z_takes_flat_or_per_head_input():
    sae = SparseAutoencoder.from_local(GOLDEN / "hook_z")
    io = load_file(str(GOLDEN / "hook_z" / "io.safetensors"))
    x = io["x"]                                  # [B,S,H,d_head] as TL's hook_z captures it
    assert x.dim() == 4
    torch.testing.assert_close(sae.encode(x.flatten(-2)), io["feats"], **TOL)
    assert sae.reconstruct(x).shape == x.shape
    assert sae.reconstruct(x.flatten(-2)).shape == x.flatten(-2).shape


def test_stateful_normalisation_needs_the_input_to_decode():
    sae = SparseAutoencoder.from_local(GOLDEN / "standard_layer_norm")
    io = load_file(str(GOLDEN / "standard_layer_norm" / "io.safetensors"))
    with pytest.raises(InterventionError, match="normalises its input"):
        sae.decode(io["feats"])
    # and without normalisation decode alone is sae-lens's decode
    plain = SparseAutoencoder.from_local(GOLDEN / "standard")
    pio = load_file(str(GOLDEN / "standard" / "io.safetensors"))
    torch.testing.assert_close(plain.decode(pio["feats"]), pio["recons"], **TOL)


def test_reconstruction_error_is_mse_over_all_elements():
    sae = SparseAutoencoder.from_local(GOLDEN / "jumprelu")
    io = load_file(str(GOLDEN / "jumprelu" / "io.safetensors"))
    expected = (io["out"].double() - io["x"].double()).pow(2).mean().item()
    assert sae.reconstruction_error(io["x"]) == pytest.approx(expected, rel=1e-5)


def test_topk_strategies_agree_without_ties_and_differ_on_ties():
    sae = SparseAutoencoder.from_local(GOLDEN / "topk")
    io = load_file(str(GOLDEN / "topk" / "io.safetensors"))
    for strategy in TopKStrategy:
        torch.testing.assert_close(sae.encode(io["x"], strategy), io["feats"], **TOL)
    # exact ties: the GPU strategy keeps every tied value, the CPU one exactly k
    tied = sae.encode_pre_activation(io["x"][0, 0]).detach().clone()
    tied = torch.full_like(tied, -1.0)
    tied[:20] = 2.0
    from torch_mi.dictionaries.sae import _topk
    assert int((_topk(tied, 8, TopKStrategy.CPU) > 0).sum()) == 8
    assert int((_topk(tied, 8, TopKStrategy.GPU) > 0).sum()) == 20


def test_decoder_vectors_are_rows_of_w_dec():
    sae = SparseAutoencoder.from_local(GOLDEN / "gated")
    w_dec = load_file(str(GOLDEN / "gated" / "sae_weights.safetensors"))["W_dec"]
    torch.testing.assert_close(sae.decoder_vector(7), w_dec[7], rtol=0, atol=0)
    torch.testing.assert_close(sae.decoder_vectors([3, 1]), w_dec[[3, 1]], rtol=0, atol=0)
    with pytest.raises(InterventionError, match="out of range"):
        sae.decoder_vector(256)
