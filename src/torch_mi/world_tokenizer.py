"""The RWKV "world" tokenizer: greedy longest match over UTF-8 bytes.

RWKV-4/5/6/7 world models ship no ``tokenizer.json``: their vocabulary is a text file
(``rwkv_vocab_v20230424.txt``), one token per line as ``<id> <python literal> <byte length>``,
e.g. ``7334 'def' 3`` or ``257 b'\\xe4\\xbd' 2``. Encoding walks a byte trie and always
takes the longest token starting at the current byte (BlinkDL's ``TRIE_TOKENIZER``, whose ids
this reproduces exactly); there are no merges, no normalisation and no BOS. Id 0 is the
end-of-text token: it has no bytes and decodes to nothing.

The file is parsed without ``eval``: each line must match the literal grammar (quotes,
escapes ``\\xHH \\uHHHH \\UHHHHHHHH \\t \\n \\r \\\\ \\' \\" \\a \\b \\f \\v`` and octal), and a
malformed line, a duplicate id or token, an id out of range, a declared length that does not
match, a missing single byte or an oversized file is a TokenizerError naming the line.

Decoding is strict: ids whose bytes are not valid UTF-8 raise TokenizerError (``decode_bytes``
returns the raw bytes; ``errors="replace"`` gives U+FFFD instead). Per-token display strings
(``to_str_tokens``, ``decode_token``, the ``tokens`` of ``encode_with_offsets``) use U+FFFD for
a token that holds only part of a character, as HF byte-level tokenizers do.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .errors import TokenizerError
from .positions import EncodingWithOffsets
from .tokenizer import MITokenizer, check_decode_errors, pad_batch

VOCAB_FILE_NAME = "rwkv_vocab_v20230424.txt"
MAX_VOCAB_FILE_BYTES = 16 * 1024 * 1024  # the real file is 1.1 MB
MAX_TOKEN_BYTES = 1024  # the longest real token is 128 bytes; bounds the trie walk per token
MAX_TOKEN_ID = 1 << 21  # without a model vocab_size to check against
END_OF_TEXT_ID = 0

_ESCAPE = r"\\(?:[\\'\"abfnrtv]|[0-7]{1,3}|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"
_LINE = re.compile(rf"(\d{{1,9}}) (b?)(?:'((?:[^'\\\n]|{_ESCAPE})*)'|\"((?:[^\"\\\n]|{_ESCAPE})*)\")"
                   rf" (\d{{1,9}})")
_UNICODE_ESCAPE = re.compile(r"\\[uU]")

# A trie node maps a byte to an edge [token id or -1, child node].
_Node = dict[int, list]
_LEAF: _Node = {}


# ---- the vocabulary file ----------------------------------------------------------------------
def find_vocab_file(directory: str | os.PathLike) -> Path | None:
    """The world-vocabulary file of a model folder (``rwkv_vocab_v20230424.txt``, else the
    single ``rwkv_vocab_*.txt``), or None; TokenizerError if several candidates compete."""
    directory = Path(directory)
    exact = directory / VOCAB_FILE_NAME
    if exact.exists() or exact.is_symlink():
        return exact
    found = sorted(directory.glob("rwkv_vocab_*.txt"))
    if len(found) > 1:
        raise TokenizerError(f"{directory} holds several RWKV vocabulary files "
                             f"{[p.name for p in found]}; keep the one the model was trained "
                             f"with (normally {VOCAB_FILE_NAME})")
    return found[0] if found else None


def read_vocab_file(path: str | os.PathLike, vocab_size: int | None = None) -> list[bytes | None]:
    """Parse a world-vocabulary file into ``table[id] -> token bytes`` (None where unused)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_VOCAB_FILE_BYTES:
            raise TokenizerError(f"{path} is {size} bytes; an RWKV vocabulary file is about 1 MB "
                                 f"(limit {MAX_VOCAB_FILE_BYTES}); is it the right file?")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_VOCAB_FILE_BYTES + 1)
    except OSError as exc:
        raise TokenizerError(f"cannot read RWKV vocabulary file {path}: {exc}") from exc
    if len(raw) > MAX_VOCAB_FILE_BYTES:  # grew while being read, or not a regular file
        raise TokenizerError(f"{path} holds more than {MAX_VOCAB_FILE_BYTES} bytes; an RWKV "
                             f"vocabulary file is about 1 MB")
    return parse_vocab(raw, str(path), vocab_size)


def parse_vocab(raw: bytes, where: str = "vocabulary",
                vocab_size: int | None = None) -> list[bytes | None]:
    """``table[id] -> bytes`` from the file's contents; TokenizerError naming the bad line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerError(f"{where} is not UTF-8 text (byte {exc.start}); an RWKV vocabulary "
                             f"file is UTF-8") from exc
    limit = vocab_size if vocab_size is not None else MAX_TOKEN_ID
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    if not lines:
        raise TokenizerError(f"{where} is empty; expected lines '<id> <literal> <length>'")
    entries: dict[int, bytes] = {}
    first_line: dict[bytes, int] = {}
    for number, line in enumerate(lines, start=1):
        token_id, token = _parse_line(line.removesuffix("\r"), f"{where} line {number}", limit)
        if token_id in entries:
            raise TokenizerError(f"{where} line {number}: id {token_id} appears twice; each id "
                                 f"must name one token")
        if token in first_line:
            raise TokenizerError(f"{where} line {number}: token {token!r:.60} already has id "
                                 f"{_id_of(entries, token)} (line {first_line[token]}); "
                                 f"a token must have one id")
        entries[token_id] = token
        first_line[token] = number
    missing = [b for b in range(256) if bytes([b]) not in first_line]
    if missing:
        raise TokenizerError(f"{where} has no single-byte token for byte(s) "
                             f"{[hex(b) for b in missing[:8]]}{'...' if len(missing) > 8 else ''};"
                             f" some text could not be encoded (is the file truncated?)")
    table: list[bytes | None] = [None] * (max(entries) + 1)
    for token_id, token in entries.items():
        table[token_id] = token
    return table


def _id_of(entries: dict[int, bytes], token: bytes) -> int:
    """The id already holding ``token`` (error path only)."""
    return next(i for i, t in entries.items() if t == token)


def _parse_line(line: str, where: str, limit: int) -> tuple[int, bytes]:
    """``(id, token bytes)`` of one line ``<id> <literal> <length>``."""
    match = _LINE.fullmatch(line)
    if match is None:
        raise TokenizerError(f"{where}: expected '<id> <quoted literal> <byte length>', got "
                             f"{line!r:.80}")
    token_id, is_bytes = int(match[1]), bool(match[2])
    body = match[3] if match[3] is not None else match[4]
    if token_id == END_OF_TEXT_ID or token_id >= limit:
        raise TokenizerError(f"{where}: id {token_id} is out of range 1..{limit - 1} (id 0 is "
                             f"end-of-text and has no bytes)")
    token = _literal_bytes(body, is_bytes, where)
    declared = int(match[5])
    if len(token) != declared:
        raise TokenizerError(f"{where}: the literal is {len(token)} bytes but the line declares "
                             f"{declared}")
    if not 1 <= declared <= MAX_TOKEN_BYTES:
        raise TokenizerError(f"{where}: a token must be 1..{MAX_TOKEN_BYTES} bytes, got "
                             f"{declared}")
    return token_id, token


def _literal_bytes(body: str, is_bytes: bool, where: str) -> bytes:
    """The bytes a Python string/bytes literal body denotes (escapes already validated)."""
    try:
        if is_bytes:
            if not body.isascii() or _UNICODE_ESCAPE.search(body.replace("\\\\", "")):
                raise ValueError("a bytes literal holds ASCII and \\x escapes only")
            return codecs.escape_decode(body.encode("ascii"))[0]
        # non-Latin-1 characters become \u escapes first, so unicode_escape sees ASCII + Latin-1
        text = body.encode("latin-1", "backslashreplace").decode("unicode_escape")
        return text.encode("utf-8")
    except (ValueError, UnicodeError) as exc:
        raise TokenizerError(f"{where}: bad literal {body!r:.60}: {exc}") from exc


def build_trie(table: Sequence[bytes | None]) -> _Node:
    """The byte trie of ``table``: ``node[byte] = [id or -1, child]``; leaves share the empty
    ``_LEAF`` (never mutated), so the walk needs no None test."""
    root: _Node = {}
    for token_id, token in enumerate(table):
        if not token:
            continue
        node, last = root, len(token) - 1
        for depth, byte in enumerate(token):
            edge = node.get(byte)
            if edge is None:
                edge = node[byte] = [-1, _LEAF]
            if depth == last:
                edge[0] = token_id
            else:
                if edge[1] is _LEAF:
                    edge[1] = {}
                node = edge[1]
    return root


def longest_match_ids(root: _Node, data: bytes) -> list[int]:
    """Greedy longest-match ids of ``data``: from each position walk the trie as far as the
    bytes go and take the last token seen (the hot loop: ~0.15-0.25 s per MB on one core)."""
    out: list[int] = []
    append = out.append
    pos = 0
    while True:
        node, j, best, best_end = root, pos, -1, pos
        try:
            while True:
                edge = node.get(data[j])
                if edge is None:
                    break
                j += 1
                if edge[0] >= 0:
                    best, best_end = edge[0], j
                node = edge[1]
        except IndexError:  # the walk reached the end of data
            if pos >= len(data):
                return out
        if best < 0:  # only with a table lacking a single-byte token (refused at load)
            raise TokenizerError(f"no token matches byte {data[pos]:#04x} at offset {pos}")
        append(best)
        pos = best_end


# ---- the tokenizer ----------------------------------------------------------------------------
class WorldTokenizer(MITokenizer):
    """MITokenizer over the RWKV world vocabulary (see the module docstring).

    ``encode`` and ``encode_raw`` are the same (no BOS); ``eos_token_ids`` default to (0,),
    the end-of-text id; ``vocab_size`` is the model's (65536 for the world models), larger
    than the file's last id: the unused ids, like 0, decode to nothing."""

    def __init__(self, table: Sequence[bytes | None], *, vocab_size: int | None = None,
                 eos_token_ids: tuple[int, ...] = (END_OF_TEXT_ID,),
                 bos_token_id: int | None = None, pad_token_id: int | None = None) -> None:
        table = list(table)
        if not all(t is None or isinstance(t, bytes) for t in table):
            raise TokenizerError("WorldTokenizer needs a table of bytes (or None) per id; build "
                                 "it with read_vocab_file or WorldTokenizer.from_file")
        missing = set(range(256)) - {t[0] for t in table if t is not None and len(t) == 1}
        if missing:
            raise TokenizerError(f"the table has no single-byte token for byte(s) "
                                 f"{sorted(missing)[:8]}; every byte needs one so that any "
                                 f"text can be encoded")
        size = len(table) if vocab_size is None else int(vocab_size)
        if size < len(table):
            raise TokenizerError(f"vocab_size {size} is smaller than the vocabulary file's "
                                 f"{len(table)} ids; the file does not belong to this model")
        self.inner = None  # no HF tokenizers object behind this one
        self._table = table + [None] * (size - len(table))
        self._trie = build_trie(table)
        self._size = size
        self._display = [(t or b"").decode("utf-8", "replace") for t in self._table]
        self.eos_token_ids = tuple(eos_token_ids)
        self.bos_token_id = bos_token_id
        self.pad_token_id = pad_token_id

    @classmethod
    def from_file(cls, path: str | os.PathLike, vocab_size: int | None = None,
                  **special: object) -> WorldTokenizer:
        """Load a world-vocabulary file, or the one in a model folder."""
        path = Path(path)
        if path.is_dir():
            found = find_vocab_file(path)
            if found is None:
                raise TokenizerError(f"no RWKV vocabulary file in {path}; an RWKV world model "
                                     f"folder ships {VOCAB_FILE_NAME}")
            path = found
        return cls(read_vocab_file(path, vocab_size), vocab_size=vocab_size,
                   **special)  # type: ignore[arg-type]

    from_hf_path = from_file

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (the world tokenizer adds no special tokens)."""
        return longest_match_ids(self._trie, self._utf8(text))

    encode_raw = encode

    def encode_bytes(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Token ids of raw bytes (any bytes, valid UTF-8 or not)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TokenizerError(f"encode_bytes needs bytes, got {type(data).__name__}; use "
                                 f"encode for str")
        return longest_match_ids(self._trie, bytes(data))

    def encode_with_offsets(self, text: str) -> EncodingWithOffsets:
        """Ids, display strings and character spans ``[start, end)``: a token holding part of
        a multi-byte character spans that whole character (positions.py convention)."""
        data = self._utf8(text)
        ids = longest_match_ids(self._trie, data)
        table, display = self._table, self._display
        return EncodingWithOffsets(ids, [display[i] for i in ids],
                                   char_spans(data, [len(table[i]) for i in ids]))

    encode_raw_with_offsets = encode_with_offsets

    def encode_batch(self, texts: list[str], *, add_special_tokens: bool = True,
                     padding_side: str = "left"):
        """``(ids, attention_mask)`` [B, T] of several texts, padded (left by default)."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise TokenizerError(f"encode_batch needs a non-empty list of strings, got "
                                 f"{type(texts).__name__}")
        return pad_batch([self.encode(t) for t in texts], self.padding_id, padding_side)

    @staticmethod
    def _utf8(text: str) -> bytes:
        if not isinstance(text, str):
            hint = "; use encode_bytes for bytes" if isinstance(text, (bytes, bytearray)) else ""
            raise TokenizerError(f"encode needs a str, got {type(text).__name__}{hint}")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TokenizerError(f"text has an unpaired surrogate {text[exc.start]!r} at "
                                 f"character {exc.start}; it has no UTF-8 bytes to encode") from exc

    # ---- decoding -------------------------------------------------------------------------
    def decode_bytes(self, ids) -> bytes:
        """The raw bytes of ``ids`` (id 0 and unused ids contribute nothing)."""
        ids = self._id_list(ids)
        bad = [i for i in ids if not 0 <= i < self._size]
        if bad:
            raise TokenizerError(f"token ids {bad[:5]} are outside the vocabulary "
                                 f"(0..{self._size - 1})")
        table = self._table
        return b"".join([table[i] or b"" for i in ids])

    def decode(self, ids, errors: str = "strict") -> str:
        """Text of ``ids``; TokenizerError where the bytes are not UTF-8 (a token sequence cut
        inside a character), unless ``errors`` is "replace", "ignore" or "backslashreplace"."""
        check_decode_errors(errors)
        data = self.decode_bytes(ids)
        try:
            return data.decode("utf-8", errors)
        except UnicodeDecodeError as exc:
            shown = self._id_list(ids)
            shown = f"{shown[:8]}{'...' if len(shown) > 8 else ''}"
            raise TokenizerError(
                f"ids {shown} decode to bytes that are not UTF-8 at byte "
                f"{exc.start} ({data[exc.start:exc.start + 4]!r}): a character is split across "
                f"the ends of the ids; use decode_bytes for the raw bytes or "
                f"decode(ids, errors='replace')") from exc

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (empty for id 0 and unused ids)."""
        return self.decode_bytes([token_id])

    def token_text(self, token_id: int) -> str:
        """One token for display: its text, U+FFFD for the bytes of a partial character."""
        (token_id,) = self._id_list([token_id])
        if not 0 <= token_id < self._size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary "
                                 f"(0..{self._size - 1})")
        return self._display[token_id]

    decode_token = token_text

    def id_to_token(self, token_id: int) -> str | None:
        """The token's display text, or None for ids without bytes (0, unused, out of range)."""
        (token_id,) = self._id_list([token_id])
        if not 0 <= token_id < self._size or not self._table[token_id]:
            return None
        return self.token_text(token_id)

    @property
    def vocab_size(self) -> int:
        return self._size

    def to_str_tokens(self, tokens, prepend_bos: bool | None = None) -> list:
        """Each token as display text (TL's ``to_str_tokens``); see :meth:`token_text`."""
        if isinstance(tokens, str):
            return [self.token_text(i) for i in self.tokens_for(tokens, prepend_bos)]
        if isinstance(tokens, (list, tuple)) and tokens and all(isinstance(t, str)
                                                                 for t in tokens):
            return [self.to_str_tokens(t, prepend_bos) for t in tokens]
        return [self.token_text(i) for i in self._id_row(tokens, "to_str_tokens")]

    def _pieces(self, ids: list[int]) -> list[str]:
        return [self.token_text(i) for i in ids[:12]] + (["..."] if len(ids) > 12 else [])

    def __repr__(self) -> str:
        return f"WorldTokenizer(vocab_size={self._size})"


def char_spans(data: bytes, lengths: Iterable[int]) -> list[tuple[int, int]]:
    """Character spans of consecutive byte runs of the UTF-8 ``data``: a run starting or ending
    inside a character is widened to that whole character."""
    lengths = list(lengths)
    if not lengths:
        return []
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0)
    starts_char = (raw.to(torch.int32) & 0xC0) != 0x80  # [N] first byte of a character
    char_of_byte = torch.cumsum(starts_char.to(torch.int64), 0) - 1  # [N]
    ends = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)  # [T] exclusive byte ends
    begins = ends - torch.tensor(lengths, dtype=torch.int64)
    first = char_of_byte[begins].tolist()
    last = (char_of_byte[ends - 1] + 1).tolist()
    return list(zip(first, last, strict=True))
