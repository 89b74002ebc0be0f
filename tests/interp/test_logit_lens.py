"""Logit lens: batches of prompts, target rank/probability, KL to the final distribution and
tuned-lens maps, checked against HuggingFace's own hidden states, norm and unembedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torch_mi as mi
from torch_mi.interp.logit_lens import BatchLogitLens, LogitLensAnalysis, logit_lens

PROMPTS = ["a b", "the cat sat on", "xy"]  # unequal lengths: the batch is left-padded


def hf_lens(tiny, ids: torch.Tensor, maps=None) -> torch.Tensor:
    """HF's per-layer lens logits [L, S, V] of one row of ids: hidden state after each
    layer (the last one is HF's logits themselves), through HF's final norm and lm_head."""
    hf = tiny.hf
    with torch.no_grad():
        out = hf(ids[None], output_hidden_states=True)
        layers = []
        for layer, h in enumerate(out.hidden_states[1:-1]):  # resid_post of layers 0..L-2
            if maps and layer in maps:
                w, b = maps[layer]
                h = h @ w.T + b
            layers.append(hf.lm_head(hf.model.norm(h))[0])
        last = out.logits[0]
        if maps and len(layers) in maps:  # the last layer's resid_post is HF's pre-norm state
            raise AssertionError("hand computation covers maps of layers 0..L-2 only")
    return torch.stack([*layers, last]).float()


def test_a_list_of_prompts_runs_as_one_batch(tiny_models, loaded):
    """Found: ``mi.logit_lens(model, ["a b", "c d"])`` raised a raw ValueError."""
    model = loaded["llama"]
    batch = mi.logit_lens(model, ["a b", "c d"])
    assert isinstance(batch, BatchLogitLens) and len(batch) == 2
    assert [a.input_text for a in batch.analyses] == ["a b", "c d"]
    assert all(isinstance(a, LogitLensAnalysis) for a in batch.analyses)


@pytest.mark.parametrize("variant", ["llama", "gemma2", "qwen2"])
def test_padded_batch_equals_each_prompt_alone(loaded, variant):
    model = loaded[variant]
    batch = logit_lens(model, PROMPTS, target="a", k=5)
    assert len(batch) == len(PROMPTS)
    for prompt, got in zip(PROMPTS, batch.analyses, strict=True):
        alone = logit_lens(model, prompt, target="a", k=5)
        assert got.tokens == alone.tokens and got.input_text == alone.input_text
        assert got.grid_probs.shape == (model.num_layers, len(alone.tokens))
        for name in ("grid_probs", "kl_to_final", "target_probs"):
            torch.testing.assert_close(getattr(got, name), getattr(alone, name),
                                       atol=2e-5, rtol=1e-4)
        assert torch.equal(got.target_ranks, alone.target_ranks)
        assert [p.token_id for p in got.final_predictions] == [
            p.token_id for p in alone.final_predictions]
        for g, a in zip(got.layer_results, alone.layer_results, strict=True):
            assert [p.token_id for p in g.predictions] == [p.token_id for p in a.predictions]


def test_rank_probability_and_kl_match_huggingface(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    ids = tiny.input_ids[0]
    target = int(ids[5])
    lens = logit_lens(model, ids, target=target)
    hf_logits = hf_lens(tiny, ids)  # [L, S, V]
    hf_logp = torch.log_softmax(hf_logits.double(), -1)
    final = hf_logp[-1]
    kl = F.kl_div(hf_logp, final.expand_as(hf_logp), log_target=True,
                  reduction="none").sum(-1)  # KL(final || layer) [L, S]
    torch.testing.assert_close(lens.kl_to_final, kl, atol=1e-5, rtol=1e-4)
    assert float(lens.kl_to_final[-1].abs().max()) < 1e-6  # the last layer is the output
    torch.testing.assert_close(lens.target_probs, hf_logp[..., target].exp().float(),
                               atol=1e-5, rtol=1e-4)
    hand_rank = (hf_logits > hf_logits[..., target:target + 1]).sum(-1)
    assert torch.equal(lens.target_ranks, hand_rank)
    top1 = hf_logits.argmax(-1)  # rank 0 exactly where the target is the top token
    assert torch.equal(lens.target_ranks == 0, top1 == target)


def test_identity_tuned_lens_reproduces_the_plain_lens(tiny_models, loaded):
    model = loaded["llama"]
    ids = tiny_models["llama"].input_ids[0]
    d = model.hidden_size
    eye = {0: (torch.eye(d), torch.zeros(d)), 1: torch.nn.Identity()}
    plain, tuned = logit_lens(model, ids, target=7), logit_lens(model, ids, target=7, lens=eye)
    for name in ("grid_probs", "kl_to_final", "target_probs", "target_ranks"):
        torch.testing.assert_close(getattr(tuned, name), getattr(plain, name), atol=0, rtol=0)


def test_affine_tuned_lens_matches_a_hand_computation(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    ids = tiny.input_ids[1]
    d = model.hidden_size
    g = torch.Generator().manual_seed(3)
    w = torch.eye(d) + 0.2 * torch.randn(d, d, generator=g)
    b = 0.5 * torch.randn(d, generator=g)
    target = int(ids[-1])
    tuned = logit_lens(model, ids, target=target, lens={0: (w, b)})
    hand = hf_lens(tiny, ids, maps={0: (w, b)})
    torch.testing.assert_close(tuned.target_probs, torch.softmax(hand, -1)[..., target],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tuned.grid_probs, torch.softmax(hand, -1).max(-1).values,
                               atol=1e-5, rtol=1e-4)
    assert float((tuned.target_probs[0] - logit_lens(model, ids, target=target)
                  .target_probs[0]).abs().max()) > 1e-3  # the map really acted
    linear = torch.nn.Linear(d, d)
    with torch.no_grad():
        linear.weight.copy_(w)
        linear.bias.copy_(b)
    as_module = logit_lens(model, ids, target=target, lens={0: linear})
    torch.testing.assert_close(as_module.target_probs, tuned.target_probs)


def test_batch_aggregates_are_the_per_prompt_last_positions(loaded):
    model = loaded["llama"]
    batch = logit_lens(model, PROMPTS, target=["a", "b", "c"])
    ids = [model.tokenizer.encode_raw(t)[0] for t in "abc"]
    assert [a.target_id for a in batch.analyses] == ids
    probs = torch.stack([a.target_probs[:, -1] for a in batch.analyses])
    torch.testing.assert_close(batch.target_probs(), probs)
    torch.testing.assert_close(batch.mean_target_prob(), probs.mean(0))
    ranks = torch.stack([a.target_ranks[:, -1] for a in batch.analyses]).double()
    torch.testing.assert_close(batch.mean_target_rank(), ranks.mean(0))
    kl = torch.stack([a.kl_to_final[:, -1] for a in batch.analyses])
    torch.testing.assert_close(batch.mean_kl_to_final(), kl.mean(0))
    assert batch.to_dict()["prompts"][1]["target"]["token_id"] == ids[1]
    with pytest.raises(mi.InputError, match="needs a target"):
        logit_lens(model, PROMPTS).target_probs()


def test_bad_batches_targets_and_maps_raise_typed_errors(loaded):
    model = loaded["llama"]
    d = model.hidden_size
    cases = [
        (dict(prompt=[]), mi.InputError, "at least one prompt"),
        (dict(prompt=["a b", 3]), mi.InputError, "got int"),
        (dict(prompt=["a b", None]), mi.InputError, "NoneType"),
        (dict(prompt="a b", target="ab"), mi.TokenizerError, "2 tokens"),
        (dict(prompt="a b", target=""), mi.InputError, "non-empty"),
        (dict(prompt="a b", target=10_000), mi.InputError, "outside the vocabulary"),
        (dict(prompt="a b", target=["a"]), mi.InputError, "not a list"),
        (dict(prompt=["a", "b"], target=["a"]), mi.InputError, "1 targets for 2 prompts"),
        (dict(prompt="a b", lens={5: torch.nn.Identity()}), mi.InputError, "layer index"),
        (dict(prompt="a b", lens={0: (torch.eye(3), torch.zeros(3))}), mi.InputError,
         r"shape \[64, 64\]"),
        (dict(prompt="a b", lens={0: "scale"}), mi.InputError, "torch.nn.Module"),
        (dict(prompt="a b", lens={0: torch.nn.Linear(d, 3)}), mi.InputError,
         "residual's shape"),
    ]
    for kwargs, error, message in cases:
        prompt = kwargs.pop("prompt")
        with pytest.raises(error, match=message):
            logit_lens(model, prompt, **kwargs)
