"""The inventory §8 experiments, end to end on the embedded SmolLM2-135M-Instruct.

Each test asserts the physics that must hold whatever the exact figures (which the
examples/ scripts print and docs record): the logit lens ends in the model's own output,
a knockout moves the distribution, steering responds to its dose, patching the subject
restores the answer.
"""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.interp.dose import dose_response
from torch_mi.interp.knockout import KnockoutSpec, run_knockout
from torch_mi.interp.logit_lens import logit_lens
from torch_mi.interp.patching import causal_trace
from torch_mi.interp.vectors import mean_difference_vector, steering_vector_hooks

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def smollm2() -> mi.MIModel:
    return mi.MIModel.from_pretrained(device="cpu")


def test_default_model_is_the_embedded_smollm2(smollm2):
    assert smollm2.source.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (smollm2.num_layers, smollm2.hidden_size, smollm2.vocab_size) == (30, 576, 49152)


def test_logit_lens_reaches_paris(smollm2):
    lens = logit_lens(smollm2, PROMPT)
    final = lens.layer_results[-1].predictions[0]
    assert final.token == " Paris" == lens.final_predictions[0].token
    assert final.probability == pytest.approx(0.7725, abs=0.01)
    first = lens.first_top1(" Paris")
    assert first is not None and 0 < first < smollm2.num_layers
    assert all(r.predictions[0].token == " Paris" for r in lens.layer_results[first + 1:]) or \
        lens.layer_results[-1].predictions[0].token == " Paris"
    assert lens.first_appearance("Paris", 10) <= first


def test_knockout_last_to_first_at_the_middle_layer(smollm2):
    ids = smollm2.encode(PROMPT)[0]
    spec = KnockoutSpec().layer(smollm2.num_layers // 2).edge(len(ids) - 1, 0)
    result = run_knockout(smollm2, ids, spec)
    assert result.kl_divergence() > 1e-6
    paris = smollm2.tokenizer.find_token_id("Paris")
    p_base, p_knock = result.probability_shift(paris)
    assert p_base == pytest.approx(0.7725, abs=0.01) and p_knock != p_base


def test_steering_dose_response(smollm2):
    curve, calibration = dose_response(smollm2, PROMPT, target_token=" Paris")
    levels = [p.attention_level for p in curve.points]
    assert levels == sorted(levels)
    kls = {p.scale: p.kl for p in curve.points}
    assert kls[1.0] == pytest.approx(0.0, abs=1e-9) and kls[6.0] > kls[2.0] > 0
    assert calibration.layer == smollm2.num_layers // 2


def test_causal_trace_restores_paris(smollm2, tmp_path):
    trace = causal_trace(smollm2, PROMPT, "The capital of Poland is", answer=" Paris")
    n, s = trace.effect.shape
    assert trace.clean_metric[0] > 0.5 > trace.corrupted_metric[0]
    assert trace.effect[0, 3].item() > 0.9  # the subject token early on carries the fact
    assert trace.effect[n - 1, s - 1].item() == pytest.approx(1.0, abs=1e-4)
    assert trace.plot(tmp_path / "trace.png")


def test_steering_vector_changes_generation_at_every_step(smollm2):
    calls = []

    def count(t, point):
        calls.append(t.shape[1])
        return t

    vector = mean_difference_vector(smollm2, ["I love this, it is wonderful"],
                                    ["I hate this, it is terrible"], 12)
    hooks = steering_vector_hooks(vector, [12], scale=8.0)
    hooks.intervene(mi.HookPoint.ResidPost(12), mi.Intervention.Apply(count))
    base = smollm2.generate("I think the movie was", 16, ignore_eos=True)
    steered = smollm2.generate("I think the movie was", 16, ignore_eos=True, hooks=hooks)
    assert steered.generated_text != base.generated_text
    assert calls == [len(smollm2.tokenizer.encode("I think the movie was"))] + [1] * 15


def test_batched_generation_equals_one_by_one_on_smollm2(smollm2):
    prompts = ["The capital of France is", "Hello", "Water boils at a temperature of"]
    batch = smollm2.generate(prompts, 12)
    for prompt, result in zip(prompts, batch, strict=True):
        assert result.step_tokens == smollm2.generate(prompt, 12).step_tokens


def test_padded_batch_logits_equal_single_prompts(smollm2):
    prompts = ["The capital of France is", "Hi", "One two three four five six seven"]
    ids, mask = smollm2.tokenizer.encode_batch(prompts)
    batch = smollm2.forward(ids, attention_mask=mask).output()
    for i, prompt in enumerate(prompts):
        alone = smollm2.forward(smollm2.encode(prompt)).output()[0]
        n = alone.shape[0]
        # 1e-5 relative to the logit scale (|logits| reach ~30): padded rows take SDPA's
        # masked kernel, single prompts the causal one; they differ by float rounding only.
        scale = alone.abs().max().item()
        torch.testing.assert_close(batch[i, -n:], alone, atol=1e-5 * scale, rtol=1e-5)
