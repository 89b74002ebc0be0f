"""Looped passes (a layer range run several times) against an HF oracle whose layers are
listed twice."""

from __future__ import annotations

import copy

import pytest
import torch

import torch_mi as mi
from torch_mi.backends.looped import LoopSpec, forward_looped, generate_looped


def hf_with_repeated_layers(hf, start, end, nudge=None):
    """An HF oracle: the same model with layers start..=end listed twice."""
    twice = copy.deepcopy(hf)
    layers = list(twice.model.layers)
    repeated = [*layers[:end + 1], *(copy.deepcopy(layer) for layer in layers[start:end + 1]),
                *layers[end + 1:]]
    twice.model.layers = torch.nn.ModuleList(repeated)
    for i, layer in enumerate(twice.model.layers):
        layer.self_attn.layer_idx = i
    twice.config.num_hidden_layers = len(repeated)
    if nudge is not None:  # the feedback enters the first layer of the second pass
        def add_nudge(_module, args, kwargs):
            if args:
                return (args[0] + nudge, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": kwargs["hidden_states"] + nudge}

        twice.model.layers[end + 1].register_forward_pre_hook(add_nudge, with_kwargs=True)
    return twice


def test_depth_one_without_feedback_equals_a_plain_forward(tiny_models, loaded):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    spec = LoopSpec.no_feedback(0, 1).with_depth(1)
    assert torch.equal(forward_looped(model, ids, None, spec).output(),
                       model.forward(ids).output())


def test_two_passes_equal_hf_with_repeated_layers(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    ref = hf_with_repeated_layers(tiny.hf, 0, 0)
    with torch.no_grad():
        expected = ref(tiny.input_ids).logits
    got = forward_looped(model, tiny.input_ids, None, LoopSpec.no_feedback(0, 0))
    torch.testing.assert_close(got.output(), expected, atol=1e-5, rtol=1e-5)


def test_feedback_enters_before_the_second_pass(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(2))
    seq = tiny.input_ids.shape[1]
    nudge = torch.zeros(1, seq, model.hidden_size)
    nudge[0, 5] = 1.5 * vector
    ref = hf_with_repeated_layers(tiny.hf, 0, 0, nudge=nudge)
    with torch.no_grad():
        expected = ref(tiny.input_ids).logits
    spec = LoopSpec.no_feedback(0, 0).add_feedback(5, vector, 1.5)
    got = forward_looped(model, tiny.input_ids, None, spec).output()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    upstream = LoopSpec(0, 0, spec.feedback, restart_from_input=True)
    deeper = LoopSpec(0, 0, spec.feedback, restart_from_input=True, depth=4)
    a = forward_looped(model, tiny.input_ids, None, upstream).output()
    assert torch.equal(a, forward_looped(model, tiny.input_ids, None, deeper).output())


def test_loop_validation_and_generation(tiny_models, loaded):
    model = loaded["llama"]
    with pytest.raises(mi.InterventionError, match="loop_start"):
        LoopSpec(1, 0).validate(2, 4, 64)
    with pytest.raises(mi.InterventionError, match="outside"):
        LoopSpec(0, 2).validate(2, 4, 64)
    with pytest.raises(mi.InterventionError, match="depth"):
        LoopSpec(0, 1, depth=0).validate(2, 4, 64)
    with pytest.raises(mi.InterventionError, match="hidden size"):
        LoopSpec(0, 1).add_feedback(0, torch.ones(3)).validate(2, 4, 64)
    prompt = [5, 6, 7]
    plain = generate_looped(model, prompt, 6, LoopSpec(0, 1, depth=1))
    assert plain == model.generate(prompt, 6, ignore_eos=True).token_ids
    sustained = LoopSpec(0, 1).add_feedback(2, torch.ones(64), 3.0).with_sustained()
    assert len(generate_looped(model, prompt, 4, sustained)) == 7


# ---- steering vectors ------------------------------------------------------------------------
