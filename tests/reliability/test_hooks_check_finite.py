"""HookSpec(check_finite=True): the first non-finite hook point is named, the fused and
explicit attention paths agree, and the check costs nothing when it is off."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly

HP = mi.HookPoint
IDS = [[5, 6, 7, 8, 9, 10]]  # 6 positions: short enough for the fused kernel to hide NaN


@pytest.fixture(scope="module")
def nan_q_model(tiny_models):
    """A private llama whose layer-1 query projection has one NaN weight (set after
    loading, so no load-time check is involved)."""
    model = mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cpu")
    with torch.no_grad():
        model.backend.blocks[1].attn.qkv.weight[0, 0] = float("nan")  # head 0 of q
    return model


def test_first_non_finite_point_is_named_with_its_layer(nan_q_model):
    with raises_exactly(mi.HookError, match=r"check_finite: the tensor at blocks\.1\.attn\.hook_q "
                                            r"\(layer 1\) is not finite: 6 NaN, 0 \+inf, 0 -inf of "
                                            r"384 values, first at index \[0, 0, 0, 0\]; the "
                                            r"previous hook point, blocks\.1\.attn\.hook_in, was finite"):
        nan_q_model.forward(IDS, mi.HookSpec(check_finite=True))


def test_fused_attention_hides_the_nan_that_the_explicit_path_shows(nan_q_model):
    """The documented PyTorch behaviour: without check_finite the two paths disagree."""
    fused = nan_q_model.forward(IDS).output()
    explicit = nan_q_model.forward(IDS, mi.HookSpec().capture(HP.AttnPattern(1))).output()
    assert torch.isfinite(fused).all()  # zeros for the NaN query rows: finite garbage
    assert torch.isnan(explicit).any()


@pytest.mark.parametrize("capture", [None, HP.AttnPattern(1)], ids=["fused", "explicit"])
def test_with_check_finite_both_attention_paths_raise_at_the_same_point(nan_q_model, capture):
    spec = mi.HookSpec(check_finite=True)
    if capture is not None:
        spec.capture(capture)
    with raises_exactly(mi.HookError, match=r"at blocks\.1\.attn\.hook_q \(layer 1\)"):
        nan_q_model.forward(IDS, spec)


def test_an_intervention_that_makes_nan_is_named(loaded):
    spec = mi.HookSpec(check_finite=True).intervene(
        HP.MlpOut(0), mi.Intervention.Apply(lambda t, p: t / 0.0 * 0.0))
    with raises_exactly(mi.InterventionError, match=r"check_finite: Intervention\.Apply\(.* at "
                                                    r"blocks\.0\.hook_mlp_out \(layer 0\) produced "
                                                    r"non-finite values: .*received was finite"):
        loaded["llama"].forward(IDS, spec)


def test_nan_in_the_embedding_is_reported_model_wide(tiny_models):
    model = mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cpu")
    with torch.no_grad():
        model.backend.embed.weight[7, 3] = float("inf")
    with raises_exactly(mi.HookError, match=r"at hook_embed \(model-wide, outside the layers\).*"
                                            r"0 NaN, 1 \+inf.*first at index \[0, 2, 3\]; it is the "
                                            r"first hook point"):
        model.forward(IDS, mi.HookSpec(check_finite=True))


def test_knockout_minus_inf_passes_the_check(loaded):
    """Scores may hold -inf by design (mask, knockout); that is not an error."""
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 5, :3] = float("-inf")
    spec = (mi.HookSpec(check_finite=True).capture(HP.AttnScoresMasked(0))
            .intervene(HP.AttnScores(0), mi.Intervention.Knockout(mask)))
    cache = loaded["llama"].forward(IDS, spec)
    assert torch.isneginf(cache[HP.AttnScoresMasked(0)]).any()


def test_check_finite_changes_no_number(loaded):
    model = loaded["llama"]
    plain = model.forward(IDS).output()
    checked = model.forward(IDS, mi.HookSpec(check_finite=True)).output()
    assert torch.equal(plain, checked)


def test_check_finite_off_is_the_empty_spec():
    assert mi.HookSpec().is_empty() and not mi.HookSpec(check_finite=True).is_empty()


def test_nan_left_in_a_kv_cache_by_an_unchecked_call_is_found(tiny_models):
    """A cache filled by an unchecked call holds NaN keys: a checked step names them."""
    model = mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cpu")
    state = model.make_state()
    w = model.backend.blocks[0].attn.qkv.weight  # rows [q 64 | k 32 | v 32]
    with torch.no_grad():
        saved = w[64, 0].item()
        w[64, 0] = float("nan")  # the first key row: layer 0's cached keys go NaN
        model.forward(IDS, state=state)
        w[64, 0] = saved  # repaired: the new position's own keys are finite again
    with raises_exactly(mi.HookError, match=r"the KV cache's keys \(earlier calls included\) at "
                                            r"blocks\.0\.attn\.hook_rot_k \(layer 0\)"):
        model.forward([[11]], mi.HookSpec(check_finite=True), state=state)
    assert state.seq_len() == 6  # and the failed step was rolled back
