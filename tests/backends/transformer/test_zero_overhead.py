"""An empty HookSpec costs nothing: no clone, no stored tensor, the fused SDPA kernel, and
none of the on-demand points' work (norm statistics, per-head results, per-head inputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import torch_mi as mi
from torch_mi.hooks.cache import HookCache


class Counter:
    def __init__(self):
        self.calls = {}

    def wrap(self, name, fn):
        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args, **kwargs)
        return counted


def count_calls(monkeypatch, model: mi.MIModel, ids, hooks):
    counter = Counter()
    for name in ("clone", "detach", "contiguous", "pow", "sqrt", "expand"):
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    for name in ("matmul", "einsum"):
        monkeypatch.setattr(torch, name, counter.wrap(name, getattr(torch, name)))
    monkeypatch.setattr(HookCache, "store", counter.wrap("store", HookCache.store))
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        counter.wrap("sdpa", F.scaled_dot_product_attention))
    monkeypatch.setattr(F, "softmax", counter.wrap("softmax", F.softmax))
    out = model.forward(ids, hooks)
    monkeypatch.undo()
    return counter.calls, out


def test_empty_spec_clones_nothing_and_uses_the_fused_kernel(monkeypatch, tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    calls, cache = count_calls(monkeypatch, model, tiny.input_ids, mi.HookSpec())
    assert calls.get("clone", 0) == 0
    assert calls.get("detach", 0) == 0
    assert calls.get("contiguous", 0) == 0
    assert calls.get("store", 0) == 0
    assert calls.get("softmax", 0) == 0  # the explicit path never ran
    assert calls["sdpa"] == model.num_layers
    assert cache.num_captures() == 0
    # TL's on-demand points cost nothing unasked: no norm statistics (pow/sqrt), no per-head
    # results (matmul), no per-head inputs (expand), no split Q/K/V path (einsum).
    for name in ("pow", "sqrt", "matmul", "expand", "einsum"):
        assert calls.get(name, 0) == 0, name


def test_counting_detects_work_when_something_is_captured(monkeypatch, tiny_models, loaded):
    """Control: the same counters do see the explicit path and the stores."""
    tiny, model = tiny_models["llama"], loaded["llama"]
    spec = mi.HookSpec().capture(mi.HookPoint.AttnPattern(0), mi.HookPoint.ResidPost(1))
    calls, cache = count_calls(monkeypatch, model, tiny.input_ids, spec)
    assert calls["store"] == 2
    assert calls["softmax"] == 1  # layer 0 took the explicit path
    assert calls["sdpa"] == model.num_layers - 1  # layer 1 stayed fused
    assert cache.num_captures() == 2


def test_on_demand_points_do_their_work_only_when_asked(monkeypatch, tiny_models, loaded):
    """Control for the counters above: asking for the points makes that work happen."""
    tiny, model = tiny_models["llama"], loaded["llama"]
    spec = mi.HookSpec().capture("blocks.0.ln1.hook_scale", "blocks.0.attn.hook_result",
                                 "blocks.1.hook_q_input")
    calls, cache = count_calls(monkeypatch, model, tiny.input_ids, spec)
    assert calls["pow"] == 1 and calls["sqrt"] == 1  # one norm's statistics
    assert calls["matmul"] == 1  # one layer's per-head results
    assert calls["expand"] == 1 and calls.get("einsum", 0) == 0  # captured: a view, fused path
    assert calls["sdpa"] == model.num_layers
    assert cache.num_captures() == 3


def test_none_spec_is_the_same_as_empty(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    assert torch.equal(model.forward(tiny.input_ids, None).output(),
                       model.forward(tiny.input_ids, mi.HookSpec()).output())
