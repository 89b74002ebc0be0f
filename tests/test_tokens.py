"""TransformerLens-style token helpers (to_single_token, to_str_tokens, get_token_position)
and the strict find_token_id, checked against TL 3.9 and the HF tokenizer on SmolLM2's
tokenizer, and on the tiny byte tokenizer (which adds its own BOS)."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch

import torch_mi as mi
from torch_mi.loading.embedded import default_model_path
from torch_mi.loading.gguf_reader import GGUFFile
from torch_mi.loading.gguf_tokenizer import build_tokenizer

TEXTS = ["The capital of France is", "Albuquerque, New Mexico", " leading space",
         "unicode: café naïve 日本語 🙂🚀", "<|im_start|>user\nHi<|im_end|>\n",
         "tabs\tand\nnewlines  and   spaces", "a", "I'm can't"]


def _tl_model(hf_tokenizer):
    """A 1-layer TL HookedTransformer around ``hf_tokenizer``: only its token helpers are
    used, so the weights do not matter."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=256, d_head=4,
                                  d_vocab=len(hf_tokenizer), act_fn="relu", attn_only=True,
                                  device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HookedTransformer(cfg, tokenizer=hf_tokenizer)


@pytest.fixture(scope="module")
def smol():
    """(ours, HF tokenizer, TL model) on SmolLM2's tokenizer (no BOS added by default)."""
    transformers = pytest.importorskip("transformers")
    path = default_model_path()
    with GGUFFile(path) as file:
        ours = build_tokenizer(file.metadata, "llama", path.name)
    hf = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return ours, hf, _tl_model(hf)


@pytest.fixture(scope="module")
def byte(tiny_models, loaded, tmp_path_factory):
    """(ours, TL model) on the tiny byte tokenizer, which adds <s> itself. Its special
    tokens are named in a tokenizer_config.json, since TL reloads the tokenizer by path."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("byte_tokenizer")
    shutil.copy(tiny_models["llama"].path / "tokenizer.json", folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}))
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    return loaded["llama"].tokenizer, _tl_model(hf)


# ---- find_token_id: strict ---------------------------------------------------------------
@pytest.mark.parametrize("word", ["Albuquerque", "Parisian"])
def test_find_token_id_refuses_a_word_of_several_tokens(smol, word):
    """It used to return the last sub-token ('buquerque', 'ian') without a word."""
    ours, hf, _ = smol
    assert len(hf(" " + word, add_special_tokens=False).input_ids) > 1
    with pytest.raises(mi.TokenizerError, match=rf"{word!r} is not a single token: "
                                                rf"' {word}' encodes to \["):
        ours.find_token_id(word)


def test_find_token_id_single_tokens_match_hf(smol):
    ours, hf, _ = smol
    for word in ["Paris", "London", "the"]:
        assert [ours.find_token_id(word)] == hf(" " + word, add_special_tokens=False).input_ids
    with pytest.raises(mi.TokenizerError, match="non-empty word"):
        ours.find_token_id("")


def test_find_token_id_strict_on_the_byte_tokenizer(byte):
    ours, _ = byte
    assert ours.find_token_id("x") == ord("x")  # bare single byte
    with pytest.raises(mi.TokenizerError, match="'Paris' is not a single token"):
        ours.find_token_id("Paris")


# ---- to_str_tokens -----------------------------------------------------------------------
@pytest.mark.parametrize("text", TEXTS)
def test_to_str_tokens_equals_hf_and_tl(smol, text):
    ours, hf, tl = smol
    ids = hf(text).input_ids  # SmolLM2 adds no BOS: prepend_bos=None is this
    expected = hf.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    assert ours.to_str_tokens(text) == expected
    assert ours.to_str_tokens(ids) == expected
    assert ours.to_str_tokens(torch.tensor([ids])) == expected
    for bos in (True, False):
        assert ours.to_str_tokens(text, prepend_bos=bos) == tl.to_str_tokens(text, prepend_bos=bos)
    assert ours.to_str_tokens(TEXTS[:3], prepend_bos=True) == tl.to_str_tokens(
        TEXTS[:3], prepend_bos=True)


def test_prepend_bos_follows_tl_when_the_tokenizer_adds_bos(byte):
    ours, tl = byte
    for text in TEXTS:
        for bos in (True, False):
            assert ours.to_str_tokens(text, prepend_bos=bos) == tl.to_str_tokens(
                text, prepend_bos=bos)
        assert ours.to_str_tokens(text) == ours.to_str_tokens(text, prepend_bos=True)


def test_to_str_tokens_bad_input(smol):
    ours, _, _ = smol
    with pytest.raises(mi.TokenizerError, match=r"shape \[S\] or \[1, S\].*\[2, 3\]"):
        ours.to_str_tokens(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(mi.TokenizerError, match="outside the vocabulary|in 0..49151"):
        ours.to_str_tokens([10**9])
    with pytest.raises(mi.TokenizerError, match="prepend_bos must be True, False or None"):
        ours.to_str_tokens("x", prepend_bos="yes")


# ---- to_single_token ---------------------------------------------------------------------
def test_to_single_token_equals_tl(smol):
    ours, _, tl = smol
    for text in [" Paris", "Paris", " the", "\n"]:
        assert ours.to_single_token(text) == tl.to_single_token(text)
    for text in [" Albuquerque", "Parisian"]:
        with pytest.raises(AssertionError):
            tl.to_single_token(text)
        with pytest.raises(mi.TokenizerError, match=rf"{text!r} is not a single token: it "
                                                    r"encodes to 2 tokens \["):
            ours.to_single_token(text)


def test_to_single_token_hints_the_leading_space(byte):
    ours, _ = byte
    with pytest.raises(mi.TokenizerError, match="is not a single token"):
        ours.to_single_token("ab")
    with pytest.raises(mi.TokenizerError, match="non-empty str"):
        ours.to_single_token("")


# ---- get_token_position ------------------------------------------------------------------
def test_get_token_position_equals_tl(smol):
    ours, _, tl = smol
    text = "the cat and the dog and the end"
    for mode in ("first", "last"):
        for bos in (True, False):
            assert ours.get_token_position(" the", text, mode=mode, prepend_bos=bos) == \
                tl.get_token_position(" the", text, mode=mode, prepend_bos=bos)
        ids = tl.to_tokens(text)  # [1, S] with BOS
        tid = tl.to_single_token(" and")
        assert ours.get_token_position(tid, ids, mode=mode) == tl.get_token_position(
            tid, ids, mode=mode)
    # prepend_bos=None counts positions as model.encode does (SmolLM2: no BOS)
    ids = ours.encode(text)
    last = len(ids) - 1 - ids[::-1].index(ours.to_single_token(" the"))
    assert ours.get_token_position(" the", text, mode="last") == last == 6
    assert ours.tokens_for(text) == ids


def test_readme_token_lines(smol):
    ours, _, _ = smol
    text = "The capital of France is"
    assert ours.to_str_tokens(text) == ["The", " capital", " of", " France", " is"]
    assert ours.get_token_position(" France", torch.tensor([ours.encode(text)])) == 3


def test_get_token_position_errors(smol):
    ours, _, tl = smol
    with pytest.raises(AssertionError):
        tl.get_token_position(" Paris", "the cat")
    with pytest.raises(mi.InputError, match=r"token 7042 \(' Paris'\) does not occur"):
        ours.get_token_position(" Paris", "the cat")
    with pytest.raises(mi.InputError, match="mode must be 'first' or 'last'"):
        ours.get_token_position(" the", "the cat", mode="middle")
    with pytest.raises(mi.TokenizerError, match="is not a single token"):
        ours.get_token_position(" Albuquerque", "in Albuquerque")


# ---- MIModel delegates ---------------------------------------------------------------------
def test_model_helpers_delegate(loaded):
    model = loaded["llama"]
    assert model.to_str_tokens("Hi") == ["<s>", "H", "i"]
    assert model.to_str_tokens("Hi", prepend_bos=False) == ["H", "i"]
    assert model.to_single_token("x") == ord("x")
    assert model.get_token_position("i", model.encode("Hii"), mode="last") == 3
    with pytest.raises(mi.InputError, match="does not occur"):
        model.get_token_position("z", "Hi")
