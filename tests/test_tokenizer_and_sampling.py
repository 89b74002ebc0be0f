"""MITokenizer over HF tokenizers, sampling helpers and model metadata."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi


@pytest.fixture(scope="module")
def tok(loaded):
    return loaded["llama"].tokenizer


def test_encode_adds_special_tokens_and_encode_raw_does_not(tok):
    assert tok.encode("Hi") == [1, ord("H"), ord("i")]
    assert tok.encode_raw("Hi") == [ord("H"), ord("i")]


def test_decode_keeps_special_tokens_and_round_trips(tok):
    text = "The capital of France is"
    assert tok.decode(tok.encode_raw(text)) == text
    assert tok.decode(tok.encode(text)).startswith("<s>")
    assert tok.decode_token(ord("A")) == "A"
    assert tok.decode(torch.tensor([72, 105])) == "Hi"


def test_vocab_size_and_find_token_id(tok):
    assert tok.vocab_size == 256
    assert tok.find_token_id("x") == ord("x")  # single byte without the space
    with pytest.raises(mi.TokenizerError, match="not a single token"):
        tok.find_token_id("Paris")  # several tokens: no single id (was the last, "s")


def test_decode_rejects_ids_outside_the_vocab(tok):
    with pytest.raises(mi.TokenizerError, match="outside the vocabulary"):
        tok.decode([999])


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(mi.TokenizerError, match="no tokenizer file"):
        mi.MITokenizer.from_file(tmp_path)


def test_sample_token_greedy_and_seeded():
    logits = torch.tensor([0.1, 3.0, 0.2, 2.9])
    assert mi.sample_token(logits, 0.0) == 1
    draws = [mi.sample_token(logits, 1.0, torch.Generator().manual_seed(s)) for s in range(50)]
    again = [mi.sample_token(logits, 1.0, torch.Generator().manual_seed(s)) for s in range(50)]
    assert draws == again and {1, 3} <= set(draws)
    with pytest.raises(mi.InputError):
        mi.sample_token(torch.tensor([]))


def test_sample_token_follows_the_distribution():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([mi.sample_token(logits, 1.0, g) for _ in range(4000)]),
                            minlength=3).float() / 4000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.03, rtol=0)


def test_extract_token_prob_against_softmax():
    logits = torch.randn(1, 4, 10)
    expected = torch.softmax(logits[0, -1].double(), -1)[3].item()
    assert mi.extract_token_prob(logits, 3) == pytest.approx(expected, abs=1e-7)
    assert mi.extract_token_prob(logits[0], 3) == pytest.approx(expected, abs=1e-7)
    assert mi.extract_token_prob(logits[0, -1], 3) == pytest.approx(expected, abs=1e-7)
    with pytest.raises(mi.InputError):
        mi.extract_token_prob(logits, 10)


def test_model_metadata(loaded, tiny_models):
    model = loaded["gemma"]
    assert (model.num_layers, model.hidden_size, model.vocab_size, model.num_heads) == (2, 64,
                                                                                        256, 4)
    assert model.device == torch.device("cpu") and model.config.model_type == "gemma"
    assert isinstance(model.backend, mi.MIBackend)
    points = model.hook_points()
    # 5 model-wide points (embed, ln_final scale/normalized, final norm, unembed out) and 29
    # per layer (no hook_attn_in under MQA, no post-norm or QK-norm points on Gemma 1).
    assert len(points) == 5 + 29 * 2
    assert points[mi.HookPoint.AttnK(0)] == ("batch", "seq", 1, 32)  # TL layout [B,S,Hkv,d]
    row = model.embedding_vector(5)
    assert torch.equal(row, model.backend.embed.weight[5])
    ids = model.encode("ab")
    assert ids.tolist() == [[1, 97, 98]]
