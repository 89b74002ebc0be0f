"""Causal tracing and residual steering vectors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torch_mi as mi
from torch_mi.interp.patching import causal_trace
from torch_mi.interp.vectors import mean_difference_vector, steering_vector_hooks

CLEAN = ["Hello world", "abcdefg"]
CORRUPT = ["Jello word!", "xbcdefq"]


def test_causal_trace_identities(loaded):
    model = loaded["llama"]
    trace = causal_trace(model, CLEAN[0], CORRUPT[0], kind="resid_post")
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
    trace = causal_trace(model, CLEAN[0], CORRUPT[0], kind="mlp_out", metric="logit")
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
    both = causal_trace(model, CLEAN, CORRUPT, kind="attn_out")
    for i in range(2):
        alone = causal_trace(model, CLEAN[i], CORRUPT[i], kind="attn_out")
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
