"""Interventions on every family: against HF oracles where one exists, exactly otherwise."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi

HP = mi.HookPoint
IV = mi.Intervention
TOL = dict(atol=1e-5, rtol=1e-5)


def test_zero_attention_output_equals_hf_with_o_proj_zeroed(family, tiny_models, loaded):
    tiny, model = tiny_models[family], loaded[family]
    hf = tiny.hf_copy()
    with torch.no_grad():
        o_proj = hf.model.layers[0].self_attn.o_proj
        o_proj.weight.zero_()
        if o_proj.bias is not None:
            o_proj.bias.zero_()
        ref = hf(tiny.input_ids).logits
    spec = mi.HookSpec().intervene(HP.AttnOut(0), IV.Zero)
    ours = model.forward(tiny.input_ids, spec).output()
    torch.testing.assert_close(ours, ref, **TOL)
    # ...and it really changed something.
    assert not torch.allclose(ours, model.forward(tiny.input_ids).output(), atol=1e-4)


def test_replace_with_captured_value_is_bit_identical(family, tiny_models, loaded):
    tiny, model = tiny_models[family], loaded[family]
    points = [HP.Embed, HP.AttnQ(0), HP.AttnPattern(1), HP.MlpHidden(0), HP.ResidPost(0)]
    base = model.forward(tiny.input_ids, mi.HookSpec().capture(*points))
    spec = mi.HookSpec()
    for p in points:
        spec.intervene(p, IV.Replace(base[p]))
    assert torch.equal(model.forward(tiny.input_ids, spec).output(), base.output())


def test_add_zero_vector_is_a_no_op(family, tiny_models, loaded):
    tiny, model = tiny_models[family], loaded[family]
    zeros = torch.zeros(model.hidden_size)
    spec = mi.HookSpec().intervene(HP.ResidMid(1), IV.Add(zeros)).intervene(HP.ResidPre(0),
                                                                            IV.Add(zeros))
    assert torch.equal(model.forward(tiny.input_ids, spec).output(),
                       model.forward(tiny.input_ids).output())


def knockout_mask(model: mi.MIModel, seq: int, cells) -> torch.Tensor:
    mask = torch.zeros(1, model.num_heads, seq, seq)
    for q, k in cells:
        mask[:, :, q, k] = float("-inf")
    return mask


def test_knockout_of_an_edge_gives_exactly_zero_probability(family, tiny_models, loaded):
    tiny, model = tiny_models[family], loaded[family]
    seq = tiny.input_ids.shape[1]
    edge = (seq - 1, seq - 3)  # inside every sliding window (8)
    spec = (mi.HookSpec().capture(HP.AttnPattern(1))
            .intervene(HP.AttnScores(1), IV.Knockout(knockout_mask(model, seq, [edge]))))
    cache = model.forward(tiny.input_ids, spec)
    pattern = cache[HP.AttnPattern(1)]
    assert torch.all(pattern[:, :, edge[0], edge[1]] == 0.0)
    baseline = model.forward(tiny.input_ids, mi.HookSpec().capture(HP.AttnPattern(1)))
    assert torch.all(baseline[HP.AttnPattern(1)][:, :, edge[0], edge[1]] > 0.0)
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), **TOL)


def test_fully_knocked_out_row_gives_zero_row_and_no_nan(family, tiny_models, loaded):
    tiny, model = tiny_models[family], loaded[family]
    seq = tiny.input_ids.shape[1]
    row = 6
    spec = (mi.HookSpec().capture(HP.AttnPattern(0), HP.AttnZ(0), HP.ResidPost(1))
            .intervene(HP.AttnScores(0),
                       IV.Knockout(knockout_mask(model, seq, [(row, k) for k in range(seq)]))))
    cache = model.forward(tiny.input_ids, spec)
    pattern = cache[HP.AttnPattern(0)]
    assert torch.equal(pattern[:, :, row], torch.zeros_like(pattern[:, :, row]))
    assert torch.equal(cache[HP.AttnZ(0)][:, row], torch.zeros_like(cache[HP.AttnZ(0)][:, row]))
    for tensor in (pattern, cache[HP.ResidPost(1)], cache.output()):
        assert torch.isfinite(tensor).all()


def test_interventions_at_one_point_run_in_registration_order(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    base = model.forward(tiny.input_ids, mi.HookSpec().capture(HP.ResidPost(0)))[HP.ResidPost(0)]
    seen = {}

    def record(name):
        def fn(t, point):
            seen[name] = t.clone()
            return t
        return fn

    ones = torch.ones(model.hidden_size)
    model.forward(tiny.input_ids, mi.HookSpec()
                  .intervene(HP.ResidPost(0), IV.Scale(2.0))
                  .intervene(HP.ResidPost(0), IV.Add(ones))
                  .intervene(HP.ResidPost(0), IV.Apply(record("scale_then_add"))))
    model.forward(tiny.input_ids, mi.HookSpec()
                  .intervene(HP.ResidPost(0), IV.Add(ones))
                  .intervene(HP.ResidPost(0), IV.Scale(2.0))
                  .intervene(HP.ResidPost(0), IV.Apply(record("add_then_scale"))))
    torch.testing.assert_close(seen["scale_then_add"], base * 2 + 1, atol=0, rtol=0)
    torch.testing.assert_close(seen["add_then_scale"], (base + 1) * 2, atol=0, rtol=0)


def test_capture_holds_the_pre_intervention_value(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    plain = model.forward(tiny.input_ids, mi.HookSpec().capture(HP.ResidMid(0)))
    spec = mi.HookSpec().capture(HP.ResidMid(0)).intervene(HP.ResidMid(0), IV.Zero)
    assert torch.equal(model.forward(tiny.input_ids, spec)[HP.ResidMid(0)], plain[HP.ResidMid(0)])


def test_in_place_apply_does_not_corrupt_the_capture(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    plain = model.forward(tiny.input_ids, mi.HookSpec().capture(HP.ResidMid(0)))[HP.ResidMid(0)]
    spec = (mi.HookSpec().capture(HP.ResidMid(0))
            .intervene(HP.ResidMid(0), IV.Apply(lambda t, p: t.mul_(0.0))))
    assert torch.equal(model.forward(tiny.input_ids, spec)[HP.ResidMid(0)], plain)


def test_exception_inside_apply_leaves_the_model_untouched(tiny_models, loaded):
    tiny, model = tiny_models["gemma2"], loaded["gemma2"]
    before = model.forward(tiny.input_ids).output()

    def boom(t, point):
        raise RuntimeError("user code failed")

    spec = (mi.HookSpec().capture(HP.ResidPost(0))
            .intervene(HP.AttnScores(1), IV.Apply(boom)))
    with pytest.raises(RuntimeError, match="user code failed"):
        model.forward(tiny.input_ids, spec)
    after = model.forward(tiny.input_ids).output()
    fresh = mi.MIModel.from_pretrained(tiny.path, device="cpu").forward(tiny.input_ids).output()
    assert torch.equal(after, before) and torch.equal(after, fresh)


def test_replace_broadcasts_and_casts(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    vec = torch.randn(model.hidden_size, dtype=torch.float64)
    spec = (mi.HookSpec().intervene(HP.ResidPost(0), IV.Replace(vec))
            .capture(HP.ResidPre(1)))
    got = model.forward(tiny.input_ids, spec)[HP.ResidPre(1)]
    torch.testing.assert_close(got, vec.float().expand_as(got), atol=0, rtol=0)


def test_apply_must_keep_the_shape(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    spec = mi.HookSpec().intervene(HP.ResidPost(0), IV.Apply(lambda t, p: t[:, :1]))
    with pytest.raises(mi.InterventionError, match=r"blocks.0.hook_resid_post.*expected"):
        model.forward(tiny.input_ids, spec)


def test_knockout_only_at_scores(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    spec = mi.HookSpec().intervene(HP.AttnPattern(0), IV.Knockout(torch.zeros(1)))
    with pytest.raises(mi.InterventionError, match="hook_scores"):
        model.forward(tiny.input_ids, spec)


def test_keep_grad_keeps_the_graph_of_captures(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    delta = torch.zeros(model.hidden_size, requires_grad=True)
    spec = (mi.HookSpec(keep_grad=True).intervene(HP.ResidPre(0), IV.Add(delta))
            .capture(HP.ResidPost(1)))
    cache = model.forward(tiny.input_ids, spec)
    cache[HP.ResidPost(1)].sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    detached = model.forward(tiny.input_ids, mi.HookSpec().intervene(HP.ResidPre(0), IV.Add(delta))
                             .capture(HP.ResidPost(1)))
    assert not detached[HP.ResidPost(1)].requires_grad
