"""Causal tracing, recurrent passes and residual steering vectors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import torch_mi as mi
from torch_mi.interp.patching import causal_trace
from torch_mi.interp.vectors import mean_difference_vector, steering_vector_hooks
from torch_mi.models.recurrent import RecurrentPassSpec, generate_recurrent

CLEAN = ["Hello world", "abcdefg"]
CORRUPT = ["Jello word!", "xbcdefq"]


def test_causal_trace_identities(loaded):
    model = loaded["llama"]
    trace = causal_trace(model, CLEAN[0], CORRUPT[0], kind="resid")
    n, s = model.num_layers, len(trace.tokens)
    assert trace.effect.shape == (n, s)
    # Patching the last layer's residual at the last position restores the clean output
    # exactly; at any other position of that layer it cannot reach the last logits.
    assert trace.effect[n - 1, s - 1].item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(trace.effect[n - 1, :-1], torch.zeros(s - 1), atol=1e-6, rtol=0)
    assert trace.kl_recovery[n - 1, s - 1].item() == pytest.approx(1.0, abs=1e-4)
    # Positions where clean and corrupted tokens agree and nothing upstream differs: 0.
    assert trace.effect[0, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_patching_everything_at_a_layer_is_clean_and_nothing_is_corrupted(loaded):
    model = loaded["qwen2"]
    tok = model.tokenizer
    clean, corrupt = tok.encode(CLEAN[1]), tok.encode(CORRUPT[1])
    answer = int(model.forward([clean]).output()[0, -1].argmax())
    point = mi.HookPoint.ResidPost(0)
    clean_act = model.forward([clean], mi.HookSpec().capture(point))[point]
    prob = lambda logits: torch.softmax(logits[0, -1], -1)[answer].item()  # noqa: E731
    p_clean = prob(model.forward([clean]).output())
    p_corrupt = prob(model.forward([corrupt]).output())
    patched = model.forward([corrupt], mi.HookSpec().intervene(point, mi.Intervention.Replace(
        clean_act))).output()
    assert (prob(patched) - p_corrupt) / (p_clean - p_corrupt) == pytest.approx(1.0, abs=1e-5)
    trace = causal_trace(model, CLEAN[1], CORRUPT[1], answer=answer)
    assert trace.clean_metric[0].item() == pytest.approx(p_clean, rel=1e-5)
    assert trace.corrupted_metric[0].item() == pytest.approx(p_corrupt, rel=1e-5)


def test_trace_grid_matches_single_patches(loaded):
    """The batched grid equals patching one (layer, position) at a time by hand."""
    model = loaded["gemma"]
    trace = causal_trace(model, CLEAN[0], CORRUPT[0], kind="mlp", metric="logit")
    tok = model.tokenizer
    clean, corrupt = tok.encode(CLEAN[0]), tok.encode(CORRUPT[0])
    answer = trace.answers[0]
    layer, pos = 0, 3
    point = mi.HookPoint.MlpOut(layer)
    act = model.forward([clean], mi.HookSpec().capture(point))[point]
    base = model.forward([corrupt], mi.HookSpec().capture(point))[point].clone()
    base[:, pos] = act[:, pos]
    logit = model.forward([corrupt], mi.HookSpec().intervene(
        point, mi.Intervention.Replace(base))).output()[0, -1, answer].item()
    m_clean, m_corrupt = trace.clean_metric[0].item(), trace.corrupted_metric[0].item()
    expected = (logit - m_corrupt) / (m_clean - m_corrupt)
    assert trace.effect[layer, pos].item() == pytest.approx(expected, abs=1e-4)


def test_padded_batch_of_pairs_equals_each_pair_alone(loaded):
    model = loaded["mistral"]
    both = causal_trace(model, CLEAN, CORRUPT, kind="attn")
    for i in range(2):
        alone = causal_trace(model, CLEAN[i], CORRUPT[i], kind="attn")
        width = alone.per_pair.shape[-1]
        torch.testing.assert_close(both.per_pair[i][:, -width:], alone.per_pair[0],
                                   atol=1e-4, rtol=1e-4)


def test_trace_plot_and_errors(loaded, tmp_path):
    model = loaded["llama"]
    trace = causal_trace(model, CLEAN[0], CORRUPT[0])
    path = trace.plot(tmp_path / "trace.png")
    assert Path(path).read_bytes()[:4] == b"\x89PNG"
    assert trace.to_dict()["best"]["effect"] == pytest.approx(trace.best()[2])
    with pytest.raises(mi.InputError, match="different token counts"):
        causal_trace(model, "ab", "abc")
    with pytest.raises(mi.InputError, match="patch kind"):
        causal_trace(model, "ab", "cd", kind="heads")


# ---- recurrent passes ------------------------------------------------------------------------
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
    spec = RecurrentPassSpec.no_feedback(0, 1).with_depth(1)
    assert torch.equal(model.forward_recurrent(ids, None, spec).output(),
                       model.forward(ids).output())


def test_two_passes_equal_hf_with_repeated_layers(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    ref = hf_with_repeated_layers(tiny.hf, 0, 0)
    with torch.no_grad():
        expected = ref(tiny.input_ids).logits
    got = model.forward_recurrent(tiny.input_ids, None, RecurrentPassSpec.no_feedback(0, 0))
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
    spec = RecurrentPassSpec.no_feedback(0, 0).add_feedback(5, vector, 1.5)
    got = model.forward_recurrent(tiny.input_ids, None, spec).output()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    upstream = RecurrentPassSpec(0, 0, spec.feedback, restart_from_input=True)
    deeper = RecurrentPassSpec(0, 0, spec.feedback, restart_from_input=True, depth=4)
    a = model.forward_recurrent(tiny.input_ids, None, upstream).output()
    assert torch.equal(a, model.forward_recurrent(tiny.input_ids, None, deeper).output())


def test_recurrent_validation_and_generation(tiny_models, loaded):
    model = loaded["llama"]
    with pytest.raises(mi.InterventionError, match="loop_start"):
        RecurrentPassSpec(1, 0).validate(2, 4, 64)
    with pytest.raises(mi.InterventionError, match="outside"):
        RecurrentPassSpec(0, 2).validate(2, 4, 64)
    with pytest.raises(mi.InterventionError, match="depth"):
        RecurrentPassSpec(0, 1, depth=0).validate(2, 4, 64)
    with pytest.raises(mi.InterventionError, match="hidden size"):
        RecurrentPassSpec(0, 1).add_feedback(0, torch.ones(3)).validate(2, 4, 64)
    prompt = [5, 6, 7]
    plain = generate_recurrent(model.backend, prompt, 6, RecurrentPassSpec(0, 1, depth=1))
    assert plain == model.generate(prompt, 6, ignore_eos=True).token_ids
    sustained = RecurrentPassSpec(0, 1).add_feedback(2, torch.ones(64), 3.0).with_sustained()
    assert len(model.generate_recurrent(prompt, 4, sustained)) == 7


# ---- steering vectors ------------------------------------------------------------------------
def test_mean_difference_vector_against_manual_means(loaded):
    model = loaded["llama"]
    pos, neg = ["good day", "nice"], ["bad day!", "awful"]
    vec = mean_difference_vector(model, pos, neg, 1)
    point = mi.HookPoint.ResidPost(1)

    def mean_last(texts):
        return torch.stack([model.forward(model.encode(t), mi.HookSpec().capture(point))[point][
            0, -1] for t in texts]).mean(0)

    torch.testing.assert_close(vec, mean_last(pos) - mean_last(neg), atol=1e-5, rtol=1e-5)


def test_steering_vector_hooks_add_at_layers_and_positions(loaded):
    model = loaded["llama"]
    ids = model.encode("steer me")
    vec = torch.randn(model.hidden_size)
    point = mi.HookPoint.ResidPre(1)
    base = model.forward(ids, mi.HookSpec().capture(point))[point]
    everywhere = steering_vector_hooks(vec, [0], scale=2.0).capture(point)
    torch.testing.assert_close(model.forward(ids, everywhere)[point], base + 2 * vec)
    only_last = steering_vector_hooks(vec, [0], positions=[-1]).capture(point)
    got = model.forward(ids, only_last)[point]
    torch.testing.assert_close(got[:, :-1], base[:, :-1])
    torch.testing.assert_close(got[:, -1], base[:, -1] + vec)
