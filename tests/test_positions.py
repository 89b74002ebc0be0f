"""Character <-> token positions: lookups, span labels, offsets of real tokenizers, forward_text."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.positions import (
    EncodingWithOffsets,
    PositionConversion,
    TextForwardResult,
    TokenWithOffset,
    convert_positions,
)

MULTILINGUAL = [
    "Héllo wörld, café crème brûlée. Ça va?",
    "世界你好，世界！ 東京 and 北京",
    "Emoji: 😀 👍🏽 🇫🇷 — done.",
    "The Eiffel Tower is located in Paris, France.",
]


def eiffel() -> EncodingWithOffsets:
    """The inventory's reference tokens: "The Eiffel Tower is"."""
    return EncodingWithOffsets([10, 11, 12, 13], ["The", "ĠEiffel", "ĠTower", "Ġis"],
                               [(0, 3), (3, 10), (10, 16), (16, 19)])


def with_bos() -> EncodingWithOffsets:
    enc = eiffel()
    return EncodingWithOffsets([1, *enc.ids], ["<s>", *enc.tokens], [(0, 0), *enc.offsets])


# ---- label_spans ---------------------------------------------------------------------------
def test_label_spans_reference_vector():
    labels = eiffel().label_spans([("subject", (0, 16)), ("relation", (16, 19))])
    assert labels == ["subject", "subject", "subject_final", "relation_final"]


def test_label_spans_bos_is_other_and_first_span_wins():
    # Overlapping spans: " Tower" (10,16) overlaps both; the first listed wins.
    labels = with_bos().label_spans([("a", range(0, 12)), ("b", (10, 19))])
    assert labels == ["other", "a", "a", "a_final", "b_final"]


def test_label_spans_without_overlap_and_unused_names():
    labels = eiffel().label_spans([("tail", (16, 19)), ("nowhere", (50, 60))])
    assert labels == ["other", "other", "other", "tail_final"]
    with pytest.raises(mi.InputError, match="span"):
        eiffel().label_spans([("bad", 7)])


# ---- lookups -------------------------------------------------------------------------------
def test_sizes_and_tokens_with_offsets():
    enc = with_bos()
    assert enc.len() == len(enc) == 5 and not enc.is_empty()
    assert EncodingWithOffsets([], [], []).is_empty()
    assert enc.tokens_with_offsets()[2] == TokenWithOffset("ĠEiffel", 3, 10)
    assert enc.token_to_char_range(3) == (10, 16)
    assert enc.token_to_char_range(5) is None and enc.token_to_char_range(-1) is None


def test_exact_lookup_skips_zero_width_bos():
    enc = with_bos()
    assert [enc.char_to_token(c) for c in (0, 2, 3, 9, 10, 18)] == [1, 1, 2, 2, 3, 4]
    assert enc.char_to_token(19) is None and enc.char_to_token(-1) is None


def test_fuzzy_lookup_picks_the_nearest_midpoint():
    enc = with_bos()  # midpoints 1, 6, 13, 17
    assert enc.char_to_token_fuzzy(5) == 2  # exact
    assert enc.char_to_token_fuzzy(100) == 4
    assert enc.char_to_token_fuzzy(-4) == 1  # not the zero-width BOS
    tie = EncodingWithOffsets([1, 2], ["a", "b"], [(0, 2), (4, 6)])  # midpoints 1 and 5
    assert tie.char_to_token_fuzzy(3) == 0  # first on ties
    only_bos = EncodingWithOffsets([1], ["<s>"], [(0, 0)])
    assert only_bos.char_to_token_fuzzy(3) == 0
    assert EncodingWithOffsets([], [], []).char_to_token_fuzzy(0) is None


def test_start_lookup_and_range_overlap():
    enc = with_bos()
    assert enc.char_to_token_start(0) == 1
    assert enc.char_to_token_start(4) == 3
    assert enc.char_to_token_start(19) is None
    assert enc.char_range_to_tokens(4, 16) == [2, 3]
    assert enc.char_range_to_tokens(2, 4) == [1, 2]
    assert enc.char_range_to_tokens(0, 100) == [1, 2, 3, 4]
    assert enc.char_range_to_tokens(19, 30) == []


def test_convert_positions_flags_exact_matches():
    got = convert_positions(with_bos(), [4, 18, 40])
    assert got == [PositionConversion(4, 2, "ĠEiffel", True), PositionConversion(18, 4, "Ġis", True),
                   PositionConversion(40, 4, "Ġis", False)]
    with pytest.raises(mi.InputError, match="empty"):
        convert_positions(EncodingWithOffsets([], [], []), [0])


def test_inconsistent_encodings_are_rejected():
    with pytest.raises(mi.InputError, match="one token and one offset per id"):
        EncodingWithOffsets([1, 2], ["a"], [(0, 1), (1, 2)])
    with pytest.raises(mi.InputError, match="start <= end"):
        EncodingWithOffsets([1], ["a"], [(3, 1)])


# ---- real tokenizers: offsets are character offsets ----------------------------------------
def gpt2_byte_alphabet() -> dict[str, int]:
    """Printable character -> byte, the standard byte-level BPE alphabet (GPT-2)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + shift)
            shift += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


@pytest.fixture(scope="module")
def trained_bpe() -> mi.MITokenizer:
    """A byte-level BPE with real merges, trained here on a few sentences, adding a BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=330, special_tokens=["<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(MULTILINGUAL * 4, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return mi.MITokenizer(tok, bos_token_id=bos)


def expected_spans(text: str, tokens: list[str]) -> tuple[list[tuple[int, int]], list[range]]:
    """Character span and byte range of each token, from the token bytes alone."""
    alphabet = gpt2_byte_alphabet()
    char_of_byte = [i for i, ch in enumerate(text) for _ in ch.encode("utf-8")]
    spans, byte_ranges, pos = [], [], 0
    for token in tokens:
        size = len(bytes(alphabet[ch] for ch in token))
        byte_ranges.append(range(pos, pos + size))
        spans.append((char_of_byte[pos], char_of_byte[pos + size - 1] + 1))
        pos += size
    assert pos == len(text.encode("utf-8"))  # the tokens spell the whole text
    return spans, byte_ranges


def check_round_trip(tok: mi.MITokenizer, text: str) -> tuple[bool, bool]:
    """Check the offsets against the token bytes; say whether some character was split
    over several tokens and whether some token covers several characters."""
    enc = tok.encode_with_offsets(text)
    assert enc.ids == tok.encode(text) and enc.ids[0] == tok.bos_token_id
    assert enc.offsets[0] == (0, 0) and enc.tokens[0] == "<s>"
    raw = tok.encode_raw_with_offsets(text)
    assert raw.ids == tok.encode_raw(text) == enc.ids[1:] and raw.offsets == enc.offsets[1:]
    spans, byte_ranges = expected_spans(text, raw.tokens)
    assert raw.offsets == spans
    text_bytes = text.encode("utf-8")
    for token, (start, end), br in zip(raw.tokens, raw.offsets, byte_ranges, strict=True):
        assert text_bytes[br.start:br.stop] in text[start:end].encode("utf-8"), token
    for c, ch in enumerate(text):
        first_byte = len(text[:c].encode("utf-8"))
        char_bytes = range(first_byte, first_byte + len(ch.encode("utf-8")))
        want = next(i for i, br in enumerate(byte_ranges) if set(br) & set(char_bytes))
        assert raw.char_to_token(c) == want
        assert enc.char_to_token(c) == want + 1  # shifted by the BOS
        assert c in range(*raw.token_to_char_range(want))
    split = len(set(raw.offsets)) < len(raw.offsets)
    merged = any(end - start > 1 for start, end in raw.offsets)
    return split, merged


@pytest.mark.parametrize("text", MULTILINGUAL)
def test_byte_tokenizer_offsets_are_character_offsets(loaded, text):
    split, _ = check_round_trip(loaded["llama"].tokenizer, text)
    assert split or text.isascii()


def test_trained_bpe_offsets_are_character_offsets(trained_bpe):
    counts = [check_round_trip(trained_bpe, text) for text in MULTILINGUAL]
    # The vocabulary is small: some characters stay split into bytes, some tokens merge chars.
    assert any(split for split, _ in counts) and all(merged for _, merged in counts)
    unseen = "Grüße aus Zürich 😀, 東京!"
    check_round_trip(trained_bpe, unseen)


# ---- forward_text -------------------------------------------------------------------------
def test_forward_text_matches_forward_on_the_same_ids(loaded):
    model = loaded["llama"]
    text = "Paris, café 😀"
    spec = mi.HookSpec().capture(mi.HookPoint.ResidPost(1))
    result = model.forward_text(text, spec)
    assert isinstance(result, TextForwardResult)
    ids = model.tokenizer.encode(text)
    reference = model.forward(torch.tensor([ids]), spec)
    assert result.encoding().ids == ids and result.seq_len() == len(ids)
    assert result.tokens() == result.encoding().tokens and result.tokens()[0] == "<s>"
    torch.testing.assert_close(result.output(), reference.output(), rtol=0, atol=0)
    torch.testing.assert_close(result.require("blocks.1.hook_resid_post"),
                               reference[mi.HookPoint.ResidPost(1)], rtol=0, atol=0)
    assert result.get(mi.HookPoint.ResidPost(0)) is None
    assert result.cache().num_captures() == 1
    span = result.encoding().char_range_to_tokens(text.index("café"), text.index("café") + 4)
    assert [result.tokens()[i] for i in span] == ["c", "a", "f", "Ã", "©"]
    with pytest.raises(mi.HookError, match="not captured"):
        result.require(mi.HookPoint.ResidPost(0))


def test_forward_text_needs_a_tokenizer(loaded):
    bare = mi.MIModel(loaded["llama"].backend, None)
    with pytest.raises(mi.TokenizerError, match="no tokenizer"):
        bare.forward_text("hi")
