"""Per-head / per-position activation patching, path patching and attribution patching,
each checked against the same patch hand-built on the tiny HF model."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.helpers.hf_oracle import hf_grads, hf_logits
from torch_mi.interp.attribution_patching import (
    attribution_patch_heads,
    attribution_patch_positions,
)
from torch_mi.interp.head_patching import patch_heads, patch_positions
from torch_mi.interp.path_patching import path_patch, path_patch_heads

HP = mi.HookPoint
A, B = 5, 9  # answer and foil token ids of the tiny byte vocabulary


def metric(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, A] - logits[:, -1, B]).float().mean()


def _pair(tiny):
    """Clean = the two fixture rows, corrupted = the same rows swapped: [2, 20] each."""
    return tiny.input_ids, tiny.input_ids.flip(0)


def _record_z(hf, ids, layers):
    acts = {}

    def keep(i):
        def fn(t):
            acts[i] = t.clone()
            return t
        return fn
    hf_logits(hf, ids, z={i: keep(i) for i in layers})
    return acts  # layer -> [B,S,H*d]


def _with_head(base: torch.Tensor, source: torch.Tensor, head: int, d: int, pos=None):
    out = base.clone()
    where = slice(None) if pos is None else pos
    out[:, where, head * d:(head + 1) * d] = source[:, where, head * d:(head + 1) * d]
    return out


def test_patch_heads_z_equals_hf_patches_per_head_and_per_position(tiny_models, loaded):
    tiny, model = tiny_models["gemma"], loaded["gemma"]  # MQA, head_dim 32
    clean, corrupt = _pair(tiny)
    d, n_layers, n_heads = 32, model.num_layers, model.num_heads
    clean_z = _record_z(tiny.hf, clean, range(n_layers))
    grid = patch_heads(model, clean, corrupt, metric, kind="z", batch_size=3)
    by_pos = patch_heads(model, clean, corrupt, metric, kind="z", positions=[-1, 4],
                         layers=[1], batch_size=5)
    assert grid.shape == (n_layers, n_heads) and by_pos.shape == (1, 2, n_heads)
    for layer in range(n_layers):
        for head in range(n_heads):
            fn = lambda t, layer=layer, head=head: _with_head(t, clean_z[layer], head, d)  # noqa: E731
            want = metric(hf_logits(tiny.hf, corrupt, z={layer: fn}))
            torch.testing.assert_close(grid[layer, head], want, atol=1e-4, rtol=1e-4)
    for p, pos in enumerate([19, 4]):
        for head in range(n_heads):
            fn = lambda t, head=head, pos=pos: _with_head(t, clean_z[1], head, d, pos)  # noqa: E731
            want = metric(hf_logits(tiny.hf, corrupt, z={1: fn}))
            torch.testing.assert_close(by_pos[0, p, head], want, atol=1e-4, rtol=1e-4)


def test_patch_positions_equals_hf_residual_patches(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    clean, corrupt = _pair(tiny)
    grid = patch_positions(model, clean, corrupt, metric, kind="resid_pre", batch_size=16)
    assert grid.shape == (model.num_layers, clean.shape[1])
    cache = model.forward(clean, mi.HookSpec().capture(HP.ResidPre(0), HP.ResidPre(1)))
    for layer in range(model.num_layers):
        act = cache[HP.ResidPre(layer)]
        for pos in (0, 7, 19):
            def fn(t, act=act, pos=pos):
                out = t.clone()
                out[:, pos] = act[:, pos]
                return out
            want = metric(hf_logits(tiny.hf, corrupt, resid_pre={layer: fn}))
            torch.testing.assert_close(grid[layer, pos], want, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(grid).all()


def test_other_head_kinds_batch_invariance_and_pattern_rows(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]  # 4 heads, 2 KV heads
    clean, corrupt = _pair(tiny)
    for kind, heads in (("q", 4), ("k", 2), ("v", 2), ("pattern", 4), ("result", 4)):
        one = patch_heads(model, clean, corrupt, metric, kind=kind, batch_size=1)
        many = patch_heads(model, clean, corrupt, metric, kind=kind, batch_size=7)
        assert one.shape == (2, heads)
        torch.testing.assert_close(one, many, atol=1e-5, rtol=1e-5)
    # A pattern patch of query row 19, head 2, layer 1, by hand with Replace.
    point = HP.AttnPattern(1)
    clean_p = model.forward(clean, mi.HookSpec().capture(point))[point]
    base = model.forward(corrupt, mi.HookSpec().capture(point))[point].clone()
    base[:, 2, 19] = clean_p[:, 2, 19]
    want = metric(model.forward(corrupt, mi.HookSpec().intervene(
        point, mi.Intervention.Replace(base))).output())
    got = patch_heads(model, clean, corrupt, metric, kind="pattern", layers=[1], heads=[2],
                      positions=[19])
    torch.testing.assert_close(got[0, 0, 0], want, atol=1e-5, rtol=1e-5)


def test_path_patching_equals_a_hand_built_two_forward_computation(tiny_models, loaded):
    tiny, model = tiny_models["gemma3"], loaded["gemma3"]  # 3 layers, 4 heads of 32
    clean, corrupt = _pair(tiny)
    d, senders, receivers = 32, [(0, 1)], [(2, 0), (2, 3)]
    got = path_patch(model, clean, corrupt, metric, senders, receivers)
    # Forward 1: corrupted run, sender from clean, every other head frozen at corrupted;
    # record the receivers' queries. Forward 2: corrupted run with those queries.
    clean_z, corrupt_z = _record_z(tiny.hf, clean, range(3)), _record_z(tiny.hf, corrupt, range(3))
    recorded = {}

    def keep(t):
        recorded["q"] = t.clone()
        return t
    hf_logits(tiny.hf, corrupt, q={2: keep}, z={
        0: lambda t: _with_head(corrupt_z[0], clean_z[0], 1, d),
        1: lambda t: corrupt_z[1].clone(), 2: lambda t: corrupt_z[2].clone()})
    patched_q = lambda t: _with_head(_with_head(t, recorded["q"], 0, d), recorded["q"], 3, d)  # noqa: E731
    want = metric(hf_logits(tiny.hf, corrupt, q={2: patched_q}))
    assert got == pytest.approx(float(want), abs=1e-4)
    # Not the same as plain activation patching of the sender (which also flows through
    # layer 1's heads and the direct path): path patching isolates the path.
    plain = patch_heads(model, clean, corrupt, metric, layers=[0], heads=[1])[0, 0]
    assert abs(float(plain) - got) > 1e-4
    sweep = path_patch_heads(model, clean, corrupt, metric, receivers, layers=[0, 1],
                             batch_size=3)
    assert sweep.shape == (2, 4)
    assert float(sweep[0, 1]) == pytest.approx(got, abs=1e-5)


def test_attribution_patching_is_gradient_times_difference(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    clean, corrupt = _pair(tiny)
    grads = hf_grads(tiny.hf, corrupt, loss_fn=metric)
    clean_z, corrupt_z = _record_z(tiny.hf, clean, range(2)), _record_z(tiny.hf, corrupt, range(2))
    heads = attribution_patch_heads(model, clean, corrupt, metric)
    per_pos = attribution_patch_heads(model, clean, corrupt, metric, positions="each")
    for layer in range(2):
        term = ((clean_z[layer] - corrupt_z[layer]) * grads[f"z{layer}"]).view(2, 20, 4, 16)
        torch.testing.assert_close(heads[layer], term.sum(dim=(0, 1, 3)), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(per_pos[layer], term.sum(dim=(0, 3)), atol=1e-5, rtol=1e-4)
    post = model.forward(clean, mi.HookSpec().capture(HP.ResidPost(0)))[HP.ResidPost(0)]
    post_c = model.forward(corrupt, mi.HookSpec().capture(HP.ResidPost(0)))[HP.ResidPost(0)]
    want = ((post - post_c) * grads["resid_post0"]).sum(dim=(0, 2))
    got = attribution_patch_positions(model, clean, corrupt, metric, kind="resid_post",
                                      layers=[0])
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-4)


def test_patching_errors_are_typed(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    clean, corrupt = _pair(tiny)
    cases = [
        (lambda: patch_heads(model, "abc", "abcd", metric), "different token counts|differ"),
        (lambda: patch_heads(model, clean, corrupt[:, :5], metric), "differ in shape"),
        (lambda: patch_heads(model, clean, corrupt, metric, kind="zz"), "unknown patch kind"),
        (lambda: patch_positions(model, clean, corrupt, metric, kind="z"), "unknown patch kind"),
        (lambda: patch_heads(model, clean, corrupt, metric, layers=[2]), r"layer 2 .*0\.\.1"),
        (lambda: patch_heads(model, clean, corrupt, metric, heads=[4]), r"head 4 .*0\.\.3"),
        (lambda: patch_heads(model, clean, corrupt, metric, kind="k", heads=[2]), "head 2"),
        (lambda: patch_heads(model, clean, corrupt, metric, positions=[20]), "position 20"),
        (lambda: patch_heads(model, clean, corrupt, metric, positions="all"), "positions must"),
        (lambda: patch_heads(model, clean, corrupt, metric, batch_size=0), "batch_size"),
        (lambda: patch_heads(model, clean, corrupt, "logit_diff"), "metric must be a function"),
        (lambda: patch_heads(model, clean, corrupt, lambda logits: logits[:, -1, A]), "scalar"),
        (lambda: path_patch(model, clean, corrupt, metric, [], [(1, 0)]), "at least one sender"),
        (lambda: path_patch(model, clean, corrupt, metric, [(0, 9)], [(1, 0)]), "sender head 9"),
        (lambda: path_patch(model, clean, corrupt, metric, [(0, 1)], [(1, 0)],
                            receiver_input="z"), "receiver_input"),
        (lambda: attribution_patch_heads(model, clean, corrupt,
                                         lambda logits: float(metric(logits).detach())),
         "differentiable"),
        (lambda: attribution_patch_positions(model, clean, corrupt, metric, layers=[5]), "layer 5"),
    ]
    for call, message in cases:
        with pytest.raises(mi.InputError, match=message):
            call()


def test_ioi_attribution_patching_tracks_actual_head_patching_on_smollm2(smollm2):
    """Acceptance: Pearson(attribution, actual per-head z patching) >= 0.9 over all
    30 x 9 heads of SmolLM2 on an IOI prompt pair (same token length)."""
    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When John and Mary went to the store, Mary gave a drink to"
    tok = smollm2.tokenizer
    mary, john = tok.encode(" Mary")[-1], tok.encode(" John")[-1]

    def logit_diff(logits):
        return (logits[:, -1, mary] - logits[:, -1, john]).float().mean()

    base = float(logit_diff(smollm2.forward(smollm2.encode(corrupt)).output()))
    actual = patch_heads(smollm2, clean, corrupt, logit_diff, batch_size=90) - base  # [30, 9]
    estimate = attribution_patch_heads(smollm2, clean, corrupt, logit_diff)
    assert actual.shape == estimate.shape == (30, 9)
    r = float(torch.corrcoef(torch.stack([actual.flatten(), estimate.flatten()]))[0, 1])
    print(f"IOI SmolLM2: Pearson(attribution, actual z patching) over 270 heads = {r:.4f}")
    assert r >= 0.9
