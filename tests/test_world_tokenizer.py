"""The RWKV world tokenizer against BlinkDL's TRIE_TOKENIZER (the ``rwkv`` package's oracle).

The vocabulary comes from the ``rwkv`` package (the same ``rwkv_vocab_v20230424.txt`` the
RWKV HF repos ship), so no copy of the 1.1 MB file lives in the repo.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torch_mi as mi
import torch_mi.world_tokenizer as wt
from torch_mi.errors import ConfigError, TokenizerError
from torch_mi.loading.pretrained import load_tokenizer_dir
from torch_mi.world_tokenizer import WorldTokenizer, parse_vocab, read_vocab_file

rwkv_tokenizer = pytest.importorskip("rwkv.rwkv_tokenizer",
                                     reason="the rwkv package (dev extra) is the oracle")
VOCAB = Path(rwkv_tokenizer.__file__).parent / wt.VOCAB_FILE_NAME
HYPOTHESIS = settings(max_examples=100, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def ref():
    return rwkv_tokenizer.TRIE_TOKENIZER(str(VOCAB))


@pytest.fixture(scope="module")
def tok():
    return WorldTokenizer.from_file(VOCAB, vocab_size=65536)


# ---- reference vectors and the oracle --------------------------------------------------------
def test_reference_vectors(tok, ref):
    fib = "def fibonacci(n):\n    "
    assert tok.encode(fib) == [7334, 21676, 41943, 41, 111, 501, 28352] == ref.encode(fib)
    paris = "The capital of France is Paris. 你好"
    assert tok.encode(paris) == [6699, 51128, 4706, 44312, 4600, 37138, 47, 33, 10464, 11685]
    assert tok.encode(paris) == ref.encode(paris)
    assert tok.encode_raw(fib) == tok.encode(fib)  # no BOS
    assert tok.to_str_tokens(fib) == ["def", " fib", "onacci", "(", "n", "):", "\n    "]


def test_vocabulary_parse_equals_eval(ref):
    table = read_vocab_file(VOCAB)
    assert {i: t for i, t in enumerate(table) if t is not None} == ref.idx2token
    assert table[0] is None and len(table) == 65530


FIXED = [
    "", " ", "  ", " " * 128, " " * 129, " " * 300, "\n" * 5, "\t\t\tx", "\r\n\r\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n-1)+fibonacci(n-2)",
    "for (int i = 0; i < n; ++i) { a[i] = b[i] * 2; }", "#include <stdio.h>\nint main(){}",
    "SELECT * FROM users WHERE id = 42;", "<div class=\"x\">&amp;&lt;</div>",
    "{\"key\": [1, 2.5e-3, null, true]}", "λx. x + 1 ∀ε>0 ∃δ", "#" * 80, "-" * 81, "=" * 200,
    "你好，世界！今天天气很好。", "日本語のテキストとカタカナ", "한국어 문장입니다", "中文English混合text",
    "🙂", "🙂🙂🙂", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "👍🏽", "a🎉b", "Ünïcödé façade naïve", "e\u0301\u0302",
    "\x00", "\x00\x01\x02\x1f\x7f", "\x85\u2028\u2029\ufeff", "\ufffd", "\U0010ffff", "\uffff",
    "مرحبا بالعالم", "नमस्ते दुनिया", "Привет, мир", "สวัสดีชาวโลก", "Γειά σου Κόσμε",
    "The capital of France is Paris.", "1234567890" * 10, "3.14159265358979",
]
RANGES = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x24F), (0x370, 0x4FF), (0x600, 0x6FF),
          (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
          (0x1F300, 0x1FAFF), (0x10000, 0x1FFFF), (0xE000, 0xF8FF)]
WORDS = ["def ", "return", " the", "\n", "    ", "import", "(", ")", ":", "你", "好", "🙂",
         " Paris", "ing", "tion", "0", "\t", "==", "'", '"', "\\", "é"]


def _corpus() -> list[str]:
    rng = random.Random(12)
    texts = list(FIXED)
    for _ in range(120):  # random code points across scripts and planes
        lo, hi = rng.choice(RANGES)
        texts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 40))))
    for _ in range(80):  # word salad: long tokens next to multi-byte characters
        texts.append("".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))))
    return texts


CORPUS = _corpus()


def test_ids_equal_trie_tokenizer_on_varied_strings(tok, ref):
    assert len(CORPUS) >= 200
    for text in CORPUS:
        ids = tok.encode(text)
        assert ids == ref.encode(text), repr(text)
        assert tok.decode(ids) == text
        assert tok.decode_bytes(ids) == text.encode("utf-8")


def _raw_samples() -> list[bytes]:
    rng = random.Random(5)
    fixed = [b"\xff", b"\xfe\xff", b"\xc3", b"\xc3(", b"\xe4\xbd", b"\xf0\x9f\x99",
             b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"abc\x80def",
             "你好".encode()[:-1], "🙂".encode()[1:], b"\x00" * 10]
    randoms = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) for _ in range(60)]
    return fixed + randoms


@pytest.mark.parametrize("data", _raw_samples(), ids=lambda d: d[:8].hex())
def test_bytes_input_equals_trie_tokenizer(tok, ref, data):
    ids = tok.encode_bytes(data)
    assert ids == ref.encodeBytes(data)
    assert tok.decode_bytes(ids) == data
    assert tok.decode(ids, errors="replace") == data.decode("utf-8", "replace")
    try:
        expected = data.decode("utf-8")
    except UnicodeDecodeError:
        with pytest.raises(TokenizerError, match="not UTF-8"):
            tok.decode(ids)
    else:
        assert tok.decode(ids) == expected


@HYPOTHESIS
@given(text=st.text(max_size=60))
def test_hypothesis_text_equals_trie_tokenizer(tok, ref, text):
    try:
        expected = ref.encode(text)
    except UnicodeEncodeError:  # lone surrogates have no UTF-8
        with pytest.raises(TokenizerError, match="surrogate"):
            tok.encode(text)
        return
    assert tok.encode(text) == expected
    assert tok.decode(expected) == text


@HYPOTHESIS
@given(data=st.binary(max_size=60))
def test_hypothesis_bytes_equal_trie_tokenizer(tok, ref, data):
    ids = tok.encode_bytes(data)
    assert ids == ref.encodeBytes(data) and tok.decode_bytes(ids) == data


# ---- offsets ---------------------------------------------------------------------------------
def _char_of_byte(text: str) -> list[int]:
    """Brute force: the character index of every UTF-8 byte of ``text``."""
    return [c for c, ch in enumerate(text) for _ in ch.encode("utf-8")]


@pytest.mark.parametrize("text", [t for t in CORPUS if t][:120])
def test_offsets_map_back_to_the_text(tok, text):
    enc = tok.encode_with_offsets(text)
    assert enc.ids == tok.encode(text)
    owner, byte = _char_of_byte(text), 0
    for token_id, (start, end), shown in zip(enc.ids, enc.offsets, enc.tokens, strict=True):
        raw = tok.token_bytes(token_id)
        assert (start, end) == (owner[byte], owner[byte + len(raw) - 1] + 1)
        assert raw in text[start:end].encode("utf-8")  # the span covers the token's bytes
        whole = text[start:end].encode("utf-8") == raw
        assert shown == (text[start:end] if whole else raw.decode("utf-8", "replace"))
        byte += len(raw)
    assert byte == len(text.encode("utf-8"))


def test_offsets_of_a_split_character_span_the_whole_character(tok):
    text = "a🙂b"
    enc = tok.encode_raw_with_offsets(text)
    emoji = [span for span, i in zip(enc.offsets, enc.ids, strict=True)
             if not tok.token_bytes(i).isascii()]
    assert len(emoji) >= 2 and set(emoji) == {(1, 2)}  # both byte tokens span the emoji
    assert enc.offsets[0] == (0, 1) and enc.offsets[-1] == (2, 3)
    assert tok.encode_with_offsets("").ids == []


# ---- specials, display and bad input ---------------------------------------------------------
def test_end_of_text_and_unused_ids(tok):
    assert tok.eos_token_ids == (0,) and tok.bos_token_id is None and tok.vocab_size == 65536
    assert tok.decode([0, 65535, 66]) == "A" and tok.decode_bytes([0]) == b""
    assert tok.id_to_token(0) is None and tok.id_to_token(65535) is None
    assert tok.id_to_token(66) == "A" and tok.tokens_for("A", prepend_bos=True) == [0, 66]
    ids, mask = tok.encode_batch(["A", "AB C"])
    assert ids.shape == mask.shape == (2, len(tok.encode("AB C")))
    assert ids[0, 0].item() == 0 and mask[0].tolist()[-1] == 1


def test_partial_character_tokens_display_with_replacement(tok):
    ids = tok.encode("🙂")
    assert len(ids) >= 2 and all("\ufffd" in s for s in tok.to_str_tokens(ids))
    assert tok.decode_token(ids[0]) == tok.token_bytes(ids[0]).decode("utf-8", "replace")
    with pytest.raises(TokenizerError, match="decode_bytes"):
        tok.decode(ids[:1])
    assert tok.decode(ids[:1], errors="ignore") == ""


@pytest.mark.parametrize("call, match", [
    (lambda t: t.encode(b"abc"), "encode_bytes"),
    (lambda t: t.encode(None), "needs a str"),
    (lambda t: t.encode("a\ud800b"), "surrogate"),
    (lambda t: t.encode_bytes("abc"), "needs bytes"),
    (lambda t: t.decode([65536]), "outside the vocabulary"),
    (lambda t: t.decode([-1]), "outside the vocabulary"),
    (lambda t: t.decode([1.0]), "floats are refused"),
    (lambda t: t.decode(torch.tensor([1.0])), "floats are refused"),
    (lambda t: t.decode([1], errors="surrogateescape"), "errors must be"),
    (lambda t: t.encode_batch("abc"), "non-empty list"),
    (lambda t: t.to_single_token("Paris is"), "not a single token"),
])
def test_bad_input_is_a_typed_error(tok, call, match):
    with pytest.raises(TokenizerError, match=match):
        call(tok)


# ---- hostile vocabulary files ----------------------------------------------------------------
BYTES_256 = "".join(f"{b + 1} {bytes([b])!r} 1\n" for b in range(256))


def _vocab(extra: str) -> bytes:
    return (BYTES_256 + extra).encode("utf-8")


def test_small_vocab_with_every_literal_form_parses_like_eval(tmp_path):
    extra = ("257 'ab' 2\r\n258 \"a'b\" 3\n259 b'\\xe4\\xbd\\xa0' 3\n260 '\\u4f60\\U0001f642' 7\n"
             "261 '\\t\\\\\\'\\x41' 4\n262 '\\101\\0' 2\n263 'é' 2\n264 '你好' 6\n")
    path = tmp_path / "v.txt"
    path.write_bytes(_vocab(extra))
    oracle = rwkv_tokenizer.TRIE_TOKENIZER(str(path))
    table = read_vocab_file(path)
    assert {i: t for i, t in enumerate(table) if t is not None} == oracle.idx2token
    tok = WorldTokenizer(table)
    for text in ["aba'b你好\t\\'A", "é你🙂", "\x00A\x00", "zzz"]:
        assert tok.encode(text) == oracle.encode(text)


@pytest.mark.parametrize("extra, match", [
    ("257 ab 2\n", "expected '<id> <quoted literal>"),
    ("257 'ab' 2 junk\n", "expected '<id> <quoted literal>"),
    ("257 'ab\n", "expected '<id> <quoted literal>"),
    ("257 'a'b' 3\n", "expected '<id> <quoted literal>"),
    ("257 'a\\qb' 3\n", "expected '<id> <quoted literal>"),
    ("257 '\\x4' 1\n", "expected '<id> <quoted literal>"),
    ("\n257 'ab' 2\n", "expected '<id> <quoted literal>"),
    ("257 'ab' 2\n257 'cd' 2\n", "id 257 appears twice"),
    ("257 'ab' 2\n258 'ab' 2\n", "already has id 257"),
    ("257 b'\\x61\\x62' 2\n258 'ab' 2\n", "already has id 257"),
    ("0 'ab' 2\n", "out of range"),
    ("99999999 'ab' 2\n", "out of range"),
    ("257 'ab' 3\n", "literal is 2 bytes but the line declares 3"),
    ("257 '' 0\n", "must be 1..1024 bytes"),
    (f"257 '{'x' * 1025}' 1025\n", "must be 1..1024 bytes"),
    ("257 b'é' 2\n", "bad literal"),
    ("257 b'\\u0041' 1\n", "bad literal"),
    ("257 '\\ud800' 3\n", "bad literal"),
    ("257 '\\U00110000' 4\n", "bad literal"),
])
def test_malformed_vocab_lines_are_typed_errors(tmp_path, extra, match):
    path = tmp_path / "v.txt"
    path.write_bytes(_vocab(extra))
    with pytest.raises(TokenizerError, match=match):
        WorldTokenizer.from_file(path)


def test_vocab_ids_checked_against_the_model_vocab_size(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(_vocab("300 'ab' 2\n"))
    with pytest.raises(TokenizerError, match="out of range 1..299"):
        WorldTokenizer.from_file(path, vocab_size=300)
    assert WorldTokenizer.from_file(path, vocab_size=301).vocab_size == 301
    with pytest.raises(TokenizerError, match="smaller than the vocabulary"):
        WorldTokenizer(read_vocab_file(path), vocab_size=100)


@pytest.mark.parametrize("raw, match", [
    (b"", "is empty"),
    (b"\xff\xfe1 'a' 1\n", "not UTF-8"),
    (_vocab("")[: len(BYTES_256) // 2], "no single-byte token|expected"),
    (BYTES_256.replace("98 b'a' 1\n", "").encode(), r"no single-byte token for byte\(s\) \['0x61'\]"),
])
def test_broken_vocab_files_are_typed_errors(tmp_path, raw, match):
    path = tmp_path / "v.txt"
    path.write_bytes(raw)
    with pytest.raises(TokenizerError, match=match):
        read_vocab_file(path)


def test_huge_or_missing_vocab_file_is_refused_before_reading(tmp_path):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as handle:  # sparse: costs no disk
        handle.truncate(wt.MAX_VOCAB_FILE_BYTES + 1)
    with pytest.raises(TokenizerError, match="about 1 MB"):
        read_vocab_file(huge)
    with pytest.raises(TokenizerError, match="cannot read"):
        read_vocab_file(tmp_path / "absent.txt")
    with pytest.raises(TokenizerError, match="no RWKV vocabulary file"):
        WorldTokenizer.from_file(tmp_path)
    with pytest.raises(TokenizerError, match="table of bytes"):
        WorldTokenizer(["a"])  # type: ignore[list-item]
    with pytest.raises(TokenizerError, match="no single-byte token"):
        WorldTokenizer([None, b"a", b"ab"])  # a hand-built table that cannot encode "b"
    assert wt._LEAF == {}  # the shared leaf sentinel is never written to
    assert parse_vocab(_vocab(""))[1] == b"\x00"


# ---- attached by from_pretrained -------------------------------------------------------------
def _rwkv_folder(path: Path, vocab_size: int = 65536, link_vocab: bool = True) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "rwkv6",
                                                  "vocab_size": vocab_size}))
    if link_vocab:
        os.symlink(VOCAB, path / wt.VOCAB_FILE_NAME)
    return path


def test_load_tokenizer_dir_attaches_the_world_tokenizer(tmp_path, ref):
    folder = _rwkv_folder(tmp_path / "m")
    tok = load_tokenizer_dir(folder, json.loads((folder / "config.json").read_text()))
    assert isinstance(tok, WorldTokenizer) and tok.vocab_size == 65536
    assert tok.eos_token_ids == (0,) and tok.encode("你好 world") == ref.encode("你好 world")
    with pytest.raises(TokenizerError, match="out of range"):  # a file for a bigger model
        load_tokenizer_dir(folder, {"model_type": "rwkv6", "vocab_size": 60000})
    with pytest.raises(ConfigError, match="vocab_size"):
        load_tokenizer_dir(folder, {"model_type": "rwkv6", "vocab_size": "65536"})
    (folder / "rwkv_vocab_v20250101.txt").write_text("")
    assert load_tokenizer_dir(folder, {}) is not None  # the exact name wins
    other = _rwkv_folder(tmp_path / "o", link_vocab=False)
    (other / "rwkv_vocab_a.txt").write_text("")
    (other / "rwkv_vocab_b.txt").write_text("")
    with pytest.raises(TokenizerError, match="several RWKV vocabulary files"):
        load_tokenizer_dir(other, {})
    assert load_tokenizer_dir(_rwkv_folder(tmp_path / "n", link_vocab=False), {}) is None


def test_from_pretrained_on_an_rwkv_folder_attaches_it(tmp_path):
    from tests.helpers.rwkv import TinyRwkvShape, make_v6, write_hf_folder

    folder = write_hf_folder(make_v6(0, TinyRwkvShape(vocab=300)), tmp_path / "tiny")
    (folder / wt.VOCAB_FILE_NAME).write_bytes(_vocab("257 'ab' 2\n258 'abc' 3\n"))
    model = mi.MIModel.from_pretrained(str(folder), device="cpu")
    assert isinstance(model.tokenizer, WorldTokenizer) and model.tokenizer.vocab_size == 300
    assert model.encode("abcab").tolist() == [[258, 257]]
    assert model.to_str_tokens("abcab") == ["abc", "ab"]
    assert model.tokenizer.encode_with_offsets("abcab").offsets == [(0, 3), (3, 5)]
