"""Residual decomposition and direct logit attribution.

Acceptance (issue 11): on SmolLM2, "The capital of France is", the per-head (and the
per-layer) parts sum to the model's own logit difference " Paris" - " London" (1e-4
relative), and the per-head results summed over heads equal ``hook_attn_out`` of a forward
that did not hook them (1e-5). The stacks equal TransformerLens 3.9's ActivationCache
helpers on a tiny llama (raw weights, fp32).
"""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.helpers.transformerlens import hooked_transformer
from torch_mi.interp.decomposition import (
    accumulated_resid,
    apply_ln_to_stack,
    decompose_resid,
    decomposition_hooks,
    logit_attribution,
    stack_head_results,
)

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def smollm2() -> mi.MIModel:
    return mi.MIModel.from_pretrained(device="cpu")


def _logit_diff(logits: torch.Tensor, good: int, bad: int) -> torch.Tensor:
    return logits[:, -1, good] - logits[:, -1, bad]  # [B]


def test_dla_on_smollm2_sums_to_the_logit_difference(smollm2):
    ids = smollm2.encode(PROMPT)
    tok = smollm2.require_tokenizer()
    paris, london = tok.encode_raw(" Paris")[0], tok.encode_raw(" London")[0]
    expected = _logit_diff(smollm2.forward(ids).output(), paris, london)  # no hooks at all
    cache = smollm2.forward(ids, decomposition_hooks(smollm2))
    per_head = logit_attribution(smollm2, cache, " Paris", " London")
    per_layer = logit_attribution(smollm2, cache, paris, london, heads=False)
    assert len(per_head.labels) == 1 + 30 * (9 + 2) and per_head.labels[1] == "L0H0"
    assert per_layer.labels[:3] == ["embed", "0_attn_out", "0_mlp_out"]
    for result in (per_head, per_layer):
        torch.testing.assert_close(result.total(), expected, rtol=1e-4, atol=0)
        torch.testing.assert_close(result.logit_diff, expected, rtol=1e-5, atol=1e-5)
    assert expected.item() > 1  # Paris wins: a meaningful difference, not ~0
    # The attention heads of a layer add up to its attention part.
    heads = torch.tensor([per_head.as_dict()[f"L23H{h}"] for h in range(9)]).sum()
    assert heads.item() == pytest.approx(per_layer.as_dict()["23_attn_out"], rel=1e-4, abs=1e-5)


def test_smollm2_head_results_sum_to_attn_out(smollm2):
    ids = smollm2.encode(PROMPT)
    layers = range(0, 30, 7)
    plain = smollm2.forward(ids, mi.HookSpec().capture(
        *[f"blocks.{i}.hook_attn_out" for i in layers]))  # o_proj path, no per-head results
    heads = smollm2.forward(ids, mi.HookSpec().capture(
        *[f"blocks.{i}.attn.hook_result" for i in layers]))
    for i in layers:
        result = heads[f"blocks.{i}.attn.hook_result"]  # [B,S,H,D]
        assert result.shape == (1, ids.shape[1], 9, 576)
        attn_out = plain[f"blocks.{i}.hook_attn_out"]
        summed = result.sum(dim=2) + smollm2.weights.layer(i).b_O
        torch.testing.assert_close(summed, attn_out, rtol=1e-5,
                                   atol=1e-5 * attn_out.abs().max().item())


@pytest.mark.parametrize("variant", ("starcoder2", "llama3", "qwen3"))
def test_dla_is_exact_with_biases_and_layernorm(variant, loaded, tiny_models):
    """StarCoder2: LayerNorm (centred, with a bias) and o_proj biases; llama3: attention and
    MLP biases; qwen3: QK-norm and tied embeddings."""
    model, ids = loaded[variant], tiny_models[variant].input_ids
    expected = _logit_diff(model.forward(ids).output(), 65, 66)
    cache = model.forward(ids, decomposition_hooks(model))
    result = logit_attribution(model, cache, [65, 65], torch.tensor([66, 66]))
    torch.testing.assert_close(result.total(), expected, rtol=1e-4, atol=1e-5)
    if variant == "starcoder2":
        assert "ln_final_bias" in result.labels and "0_attn_bias" in result.labels
    # A direction in the unembedding's input space gives the same parts.
    w_u = model.W_U
    by_direction = logit_attribution(model, cache, w_u[:, 65] - w_u[:, 66])
    if variant != "starcoder2":  # there the bias part is one more label
        torch.testing.assert_close(by_direction.parts, result.parts, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tl_pair(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    tl = hooked_transformer(tiny.family, tiny.hf, use_attn_result=True)
    with torch.no_grad():
        _, tl_cache = tl.run_with_cache(tiny.input_ids)
    return model.forward(tiny.input_ids, decomposition_hooks(model)), tl_cache


def _close(ours, theirs):
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=2e-5 * theirs.abs().max().item())


def test_stacks_equal_transformerlens(tl_pair):
    cache, tl_cache = tl_pair
    for layer in (None, 1):
        ours, labels = stack_head_results(cache, layer, return_labels=True)
        theirs, tl_labels = tl_cache.stack_head_results(layer if layer else -1,
                                                        return_labels=True)
        assert labels == tl_labels
        _close(ours, theirs)
        ours, labels = decompose_resid(cache, layer, return_labels=True)
        theirs, tl_labels = tl_cache.decompose_resid(layer if layer else -1, return_labels=True)
        assert labels == tl_labels
        _close(ours, theirs)
    ours, labels = accumulated_resid(cache, None, incl_mid=True, return_labels=True)
    theirs, tl_labels = tl_cache.accumulated_resid(None, incl_mid=True, return_labels=True)
    assert labels == tl_labels
    _close(ours, theirs)
    ours, labels = stack_head_results(cache, incl_remainder=True, return_labels=True)
    theirs, tl_labels = tl_cache.stack_head_results(-1, incl_remainder=True, return_labels=True)
    assert labels == tl_labels
    _close(ours, theirs)


@pytest.mark.parametrize("pos_slice", (None, -1, [0, 3]))
def test_apply_ln_to_stack_equals_transformerlens(tl_pair, pos_slice):
    cache, tl_cache = tl_pair
    stack = decompose_resid(cache, pos_slice=pos_slice)
    theirs = tl_cache.apply_ln_to_stack(tl_cache.decompose_resid(pos_slice=pos_slice), -1,
                                        pos_slice=pos_slice)
    _close(apply_ln_to_stack(cache, stack, pos_slice=pos_slice), theirs)
    mid = decompose_resid(cache, 1, mlp_input=True, apply_ln=True)
    tl_mid = tl_cache.decompose_resid(1, mlp_input=True, apply_ln=True)
    _close(mid, tl_mid)
    acc = accumulated_resid(cache, 1, incl_mid=True, apply_ln=True)
    _close(acc, tl_cache.accumulated_resid(1, incl_mid=True, apply_ln=True))


def test_errors_are_typed(loaded, tiny_models):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    bare = model.forward(ids, mi.HookSpec().capture("blocks.0.hook_attn_out"))
    with pytest.raises(mi.HookError, match="hook_embed' was not captured"):
        decompose_resid(bare)
    full = model.forward(ids, decomposition_hooks(model))
    with pytest.raises(mi.InputError, match="layer must be an int in 0..2"):
        decompose_resid(full, 3)
    with pytest.raises(mi.InputError, match="is 2 tokens, not one"):
        logit_attribution(model, full, "ab")
    with pytest.raises(mi.InputError, match="token must be a string or an id"):
        logit_attribution(model, full, 256)
    with pytest.raises(mi.InputError, match="direction must be"):
        logit_attribution(model, full, torch.zeros(63))
    with pytest.raises(mi.InputError, match="pass project="):
        accumulated_resid(full, apply_ln=True)
    gemma2 = loaded["gemma2"]
    g_cache = gemma2.forward(tiny_models["gemma2"].input_ids, decomposition_hooks(gemma2))
    with pytest.raises(mi.InputError, match="heads=False"):
        logit_attribution(gemma2, g_cache, 65, 66)
