"""Generation: KV cache = recompute = HF generate; padded batches = one by one; sampling."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.generation import SamplingConfig, filter_logits
from torch_mi.tokenizer import pad_batch

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19], [20, 21, 22, 23, 24]]


def test_cached_equals_recompute_equals_hf_generate(variant, tiny_models, loaded):
    tiny, model = tiny_models[variant], loaded[variant]
    prompt = tiny.input_ids[0, :10].tolist()
    cached = model.generate(prompt, 14, ignore_eos=True)
    recomputed = model.generate(prompt, 14, ignore_eos=True, recompute=True)
    assert cached.step_tokens == recomputed.step_tokens
    with torch.no_grad():
        # A copy: dynamic RoPE remembers the longest length it saw, and tiny.hf is shared.
        hf = tiny.hf_copy().generate(torch.tensor([prompt]), max_new_tokens=14,
                                     do_sample=False, eos_token_id=None, pad_token_id=0)
    assert cached.step_tokens == hf[0, len(prompt):].tolist()
    assert cached.generated_tokens == 14 and cached.total_tokens == len(prompt) + 14


def test_left_padded_batch_matches_each_prompt_alone(variant, loaded):
    model = loaded[variant]
    ids, mask = pad_batch(PROMPTS, 0)
    batch = model.forward(ids, attention_mask=mask).output()
    for i, prompt in enumerate(PROMPTS):
        alone = model.forward([prompt]).output()[0]
        # 1e-5 relative to the logit scale (the gemma2 variant's logits reach 30 by design).
        scale = max(1.0, alone.abs().max().item())
        torch.testing.assert_close(batch[i, -len(prompt):], alone, atol=1e-5 * scale, rtol=1e-5)


def test_padded_batch_hooks_see_padding_as_dead_rows(loaded):
    model = loaded["llama"]
    ids, mask = pad_batch(PROMPTS, 0)
    cache = model.forward(ids, mi.HookSpec().capture(mi.HookPoint.AttnPattern(0)),
                          attention_mask=mask)
    pattern = cache[mi.HookPoint.AttnPattern(0)]
    pads = ids.shape[1] - len(PROMPTS[0])
    assert torch.equal(pattern[0, :, :pads], torch.zeros_like(pattern[0, :, :pads]))
    assert torch.equal(pattern[0, :, pads:, :pads], torch.zeros_like(pattern[0, :, pads:, :pads]))
    assert torch.isfinite(cache.output()).all()


def test_batched_generation_equals_one_by_one(variant, loaded):
    model = loaded[variant]
    batch = model.generate(PROMPTS, 10, ignore_eos=True)
    for prompt, result in zip(PROMPTS, batch, strict=True):
        alone = model.generate(prompt, 10, ignore_eos=True)
        assert result.step_tokens == alone.step_tokens


def test_recompute_mode_batched_equals_cached(loaded):
    model = loaded["qwen2"]
    a = model.generate(PROMPTS, 9, ignore_eos=True)
    b = model.generate(PROMPTS, 9, ignore_eos=True, recompute=True)
    assert [r.step_tokens for r in a] == [r.step_tokens for r in b]


def test_steering_is_applied_at_every_step(loaded):
    model = loaded["llama"]
    calls = []

    def count(t, point):
        calls.append(t.shape[1])
        return t

    steer = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0)) * 4
    spec = (mi.HookSpec().intervene(mi.HookPoint.ResidPost(0), mi.Intervention.Add(steer))
            .intervene(mi.HookPoint.ResidPost(0), mi.Intervention.Apply(count)))
    base = model.generate("Hello", 12, ignore_eos=True)
    steered = model.generate("Hello", 12, ignore_eos=True, hooks=spec)
    assert steered.generated_text != base.generated_text
    assert calls == [len(model.tokenizer.encode("Hello"))] + [1] * 11  # prompt, then each step


def test_stop_ids_and_strings(loaded):
    model = loaded["llama"]
    free = model.generate("ab", 12, ignore_eos=True)
    first = free.step_tokens[3]
    stopped = model.generate("ab", 12, stop=[first], ignore_eos=True)
    assert stopped.stop_reason == "stop_id"
    assert stopped.step_tokens == free.step_tokens[:free.step_tokens.index(first)]
    piece = free.generated_text[2:4]
    cut = model.generate("ab", 12, stop=piece, ignore_eos=True)
    assert cut.stop_reason == "stop_string"
    assert cut.generated_text == free.generated_text[:free.generated_text.index(piece)]
    assert cut.full_text == "<s>ab" + cut.generated_text


def test_seeded_sampling_is_reproducible_and_differs_from_greedy(loaded):
    model = loaded["mistral"]
    a = model.generate("xyz", 16, temperature=1.5, seed=3, ignore_eos=True)
    b = model.generate("xyz", 16, temperature=1.5, seed=3, ignore_eos=True)
    c = model.generate("xyz", 16, temperature=1.5, seed=4, ignore_eos=True)
    assert a.step_tokens == b.step_tokens != c.step_tokens


@pytest.mark.parametrize(("top_k", "top_p"), [(5, None), (None, 0.3), (None, 0.9), (7, 0.5)])
def test_top_k_top_p_filters_match_transformers(top_k, top_p):
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1)) * 3
    expected = TemperatureLogitsWarper(0.7)(None, logits.clone())
    if top_k is not None:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p is not None:
        expected = TopPLogitsWarper(top_p)(None, expected)
    ours = filter_logits(logits, SamplingConfig(0.7, top_k, top_p))
    assert torch.equal(torch.isinf(ours), torch.isinf(expected))
    torch.testing.assert_close(ours[~torch.isinf(ours)], expected[~torch.isinf(expected)])


def test_bad_generation_arguments(loaded):
    model = loaded["llama"]
    with pytest.raises(mi.InputError):
        model.generate("a", 3, top_p=1.5)
    with pytest.raises(mi.InputError):
        model.generate("a", -1)
    with pytest.raises(mi.InputError, match="empty prompt"):
        model.generate([[]], 2)


def test_encode_batch_pads_left(loaded):
    ids, mask = loaded["llama"].tokenizer.encode_batch(["a", "abc"])
    assert ids.tolist() == [[0, 0, 1, 97], [1, 97, 98, 99]]
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    ids, mask = loaded["llama"].tokenizer.encode_batch(["a", "abc"], padding_side="right")
    assert ids.tolist()[0] == [1, 97, 0, 0]


def test_kv_cache_bookkeeping():
    cache = mi.KVCache(2)
    assert cache.is_empty() and cache.seq_len() == 0 and cache.n_layers() == 2
    k = torch.randn(1, 2, 5, 4)
    for layer in range(2):
        got_k, _ = cache.append(layer, k, k + 1)
        assert torch.equal(got_k, k)
    cache.append(0, k[:, :, :1], k[:, :, :1])
    assert cache.layer(0)[0].shape[2] == 6 and cache.seen_tokens == 6
    assert cache.memory_usage() > 0
    assert cache.trim_to(3) and cache.seq_len() == 3 and not cache.trim_to(10)
    assert torch.equal(cache.layer(1)[0], k[:, :, 2:])
    with pytest.raises(mi.HookError):
        cache.layer(2)
    cache.clear()
    assert cache.is_empty()
