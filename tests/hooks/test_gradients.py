"""Gradients at hook points (keep_grad taps, capture_grad) against HF autograd.

The oracle is the tiny HF model itself: the same loss of the logits, differentiated with
``torch.autograd.grad`` with respect to the same activations (layer inputs and outputs and
``o_proj``'s input, read with forward hooks), with the same interventions applied there.
"""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.helpers.hf_oracle import hf_grads, loss

HP = mi.HookPoint
IV = mi.Intervention


def _points(n_layers: int) -> list[mi.HookPoint]:
    return ([HP.ResidPre(0)] + [HP.ResidPost(i) for i in range(n_layers)]
            + [HP.AttnZ(i) for i in range(n_layers)])


def _check(cache: mi.HookCache, expected: dict, n_layers: int, grad_of=None) -> None:
    grad_of = grad_of or cache.grad
    for i in range(n_layers):
        z = grad_of(HP.AttnZ(i))  # [B,S,H,d]
        _close(z.flatten(2), expected[f"z{i}"], f"z{i}")
        _close(grad_of(HP.ResidPost(i)), expected[f"resid_post{i}"], f"resid_post{i}")
    _close(grad_of(HP.ResidPre(0)), expected["resid_pre0"], "resid_pre0")


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = max(float(want.abs().max()), 1e-6)
    torch.testing.assert_close(got, want, rtol=2e-4, atol=2e-5 * scale, msg=lambda m: f"{what}: {m}")


def _frozen(model: mi.MIModel) -> bool:
    return not any(p.requires_grad for p in model.backend.parameters())


def test_keep_grad_gradients_equal_hf_on_every_family(variant, tiny_models, loaded):
    tiny, model = tiny_models[variant], loaded[variant]
    n = model.num_layers
    # Layer 0's pattern is captured too, so its attention takes the explicit core under
    # grad; the other layers keep the fused one.
    spec = mi.HookSpec(keep_grad=True).capture(*_points(n), HP.AttnPattern(0))
    with torch.no_grad():  # keep_grad asks for a graph: the forward enables grad itself
        cache = model.forward(tiny.input_ids, spec)
    assert cache[HP.AttnZ(n - 1)].requires_grad
    loss(cache.output()).backward()
    _check(cache, hf_grads(tiny.hf, tiny.input_ids), n)
    assert cache.grad(HP.AttnPattern(0)).shape == cache[HP.AttnPattern(0)].shape
    assert _frozen(model)


def test_capture_grad_stores_backward_gradients_like_tl_incl_bwd(tiny_models, loaded):
    tiny, model = tiny_models["qwen2"], loaded["qwen2"]
    n = model.num_layers
    cache = model.forward(tiny.input_ids, mi.HookSpec().capture_grad(*_points(n)))
    assert cache.num_captures() == 0  # gradients only: no activation is kept
    assert set(cache.grad_points()) == set(_points(n))
    loss(cache.output()).backward()
    _check(cache, hf_grads(tiny.hf, tiny.input_ids), n)
    # A second backward accumulates, as .grad does.
    first = cache.grad(HP.ResidPost(0)).clone()
    cache2 = model.forward(tiny.input_ids, mi.HookSpec().capture_grad(HP.ResidPost(0)))
    out = cache2.output()
    loss(out).backward(retain_graph=True)
    loss(out).backward()
    torch.testing.assert_close(cache2.grad(HP.ResidPost(0)), 2 * first)
    assert _frozen(model)


def test_gradient_flows_through_scale_and_add_before_and_after_the_tap(tiny_models, loaded):
    tiny, model = tiny_models["gemma"], loaded["gemma"]
    n = model.num_layers
    shift = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(5))
    # Scale at resid_post(0) runs after that point's tap; Add at resid_post(1) after its.
    spec = (mi.HookSpec(keep_grad=True).capture(*_points(n))
            .intervene(HP.ResidPost(0), IV.Scale(1.5)).intervene(HP.ResidPost(1), IV.Add(shift)))
    cache = model.forward(tiny.input_ids, spec)
    loss(cache.output()).backward()
    expected = hf_grads(tiny.hf, tiny.input_ids,
                        {0: lambda t: t * 1.5, 1: lambda t: t + shift.to(t.dtype)})
    _check(cache, expected, n)


def test_user_leaf_upstream_and_a_tap_downstream_share_one_graph(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    delta = torch.zeros(model.hidden_size, requires_grad=True)
    spec = (mi.HookSpec(keep_grad=True).intervene(HP.ResidPre(0), IV.Add(delta))
            .capture(HP.ResidPre(0)))
    cache = model.forward(tiny.input_ids, spec)
    loss(cache.output()).backward()
    # The point after Add(delta) is the tensor delta is added to: both see the same gradient.
    torch.testing.assert_close(delta.grad, cache.grad(HP.ResidPre(0)).sum(dim=(0, 1)))


def test_replace_cuts_the_gradient_upstream(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    base = model.forward(tiny.input_ids, mi.HookSpec().capture(HP.ResidPost(0)))
    spec = (mi.HookSpec(keep_grad=True).capture(HP.ResidPre(0), HP.AttnZ(0), HP.ResidPost(1))
            .intervene(HP.ResidPost(0), IV.Replace(base[HP.ResidPost(0)])))
    cache = model.forward(tiny.input_ids, spec)
    loss(cache.output()).backward()
    for point in (HP.ResidPre(0), HP.AttnZ(0)):  # upstream of the Replace: exactly zero
        grad = cache.grad(point)
        assert grad.shape == cache[point].shape and not grad.any()
    assert cache.grad(HP.ResidPost(1)).abs().sum() > 0
    expected = hf_grads(tiny.hf, tiny.input_ids)
    _close(cache.grad(HP.ResidPost(1)), expected["resid_post1"], "resid_post1")


def test_apply_that_writes_in_place_keeps_the_captured_node(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]

    def double_in_place(t, _point):
        return t.mul_(2.0)

    spec = (mi.HookSpec(keep_grad=True).capture(*_points(2))
            .intervene(HP.ResidPost(0), IV.Apply(double_in_place)))
    cache = model.forward(tiny.input_ids, spec)
    loss(cache.output()).backward()
    _check(cache, hf_grads(tiny.hf, tiny.input_ids, {0: lambda t: t * 2.0}), 2)


def test_grad_errors_name_the_point(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    cache = model.forward(tiny.input_ids, mi.HookSpec(keep_grad=True).capture(HP.ResidPost(0))
                          .capture_grad(HP.AttnZ(1)))
    with pytest.raises(mi.HookError, match=r"no gradient at 'blocks.0.hook_resid_post' yet.*"
                                           r"backward"):
        cache.grad(HP.ResidPost(0))
    with pytest.raises(mi.HookError, match=r"'blocks.1.hook_resid_post'.*not captured.*keep_grad"):
        cache.grad("blocks.1.hook_resid_post")
    plain = model.forward(tiny.input_ids, mi.HookSpec().capture(HP.ResidPost(0)))
    with pytest.raises(mi.HookError, match=r"'blocks.0.hook_resid_post' was captured without "
                                           r"gradients"):
        plain.grad(HP.ResidPost(0))
    with pytest.raises(mi.HookError, match="inference_mode"), torch.inference_mode():
        model.forward(tiny.input_ids, mi.HookSpec().capture_grad(HP.ResidPost(0)))
    with pytest.raises(mi.HookError, match="unknown hook point|layer 7 is out of range"):
        model.forward(tiny.input_ids, mi.HookSpec().capture_grad(HP.ResidPost(7)))
    spec = mi.HookSpec().capture_grad(HP.ResidPost(0))
    with pytest.raises(mi.HookError, match="grad mode is off"), torch.no_grad():
        model.backend.forward(tiny.input_ids, spec)  # the backend alone does not enable grad
    assert "grad_captures=['blocks.0.hook_resid_post']" in repr(spec)
    assert spec.needs_grad and not mi.HookSpec().capture(HP.ResidPost(0)).needs_grad
    assert _frozen(model)


def test_documented_route_on_smollm2_layer3_z(smollm2):
    """The issue's first finding: capture('blocks.3.attn.hook_z') with keep_grad gave a
    tensor without grad and backward() raised; it now gives d loss / d z."""
    ids = smollm2.encode("The capital of France is")
    cache = smollm2.forward(ids, mi.HookSpec(keep_grad=True).capture("blocks.3.attn.hook_z"))
    z = cache["blocks.3.attn.hook_z"]
    assert z.requires_grad
    paris = smollm2.tokenizer.encode(" Paris")[-1]
    cache.output()[0, -1, paris].backward()
    grad = cache.grad("blocks.3.attn.hook_z")
    assert grad.shape == z.shape and grad[0, -1].abs().sum() > 0
    assert torch.equal(grad, z.grad) and torch.isfinite(grad).all()
    assert _frozen(smollm2)
