"""Character <-> token positions: find which tokens carry a word, a span or a character.

Offsets here are CHARACTER offsets into the Python ``str`` that was encoded, end-exclusive,
so ``text[start:end]`` is the token's surface. Character offsets are what ``str`` slicing,
``str.find`` and regex match spans give, so a span found in the text can be used as is
(docs/porting.md: character positions). A byte-level token that holds only part of a
multi-byte character (an accented letter, a CJK character, an emoji split into several byte
tokens) reports the span of that whole character, so several consecutive tokens can share
one span.

Special tokens added by the tokenizer (BOS, EOS) have no surface and get ``(0, 0)``. The
offsets are those the HuggingFace tokenizer reports: a ``tokenizer.json`` whose ByteLevel
post-processor has ``trim_offsets=true`` trims leading spaces out of the spans.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InputError
from .hooks.cache import HookCache
from .hooks.points import HookLike

SpanLike = tuple[int, int] | range


@dataclass(frozen=True)
class TokenWithOffset:
    """One token string with its character span ``[start, end)`` in the encoded text."""

    token: str
    start: int
    end: int


@dataclass(frozen=True)
class PositionConversion:
    """Result of mapping one character position to a token (see :func:`convert_positions`)."""

    char_pos: int
    token_idx: int
    token: str
    exact_match: bool


@dataclass
class EncodingWithOffsets:
    """Token ids, token strings and character offsets of one encoded text."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]

    def __post_init__(self) -> None:
        self.ids = [int(i) for i in self.ids]
        self.tokens = list(self.tokens)
        self.offsets = [(int(s), int(e)) for s, e in self.offsets]
        if not len(self.ids) == len(self.tokens) == len(self.offsets):
            raise InputError(f"EncodingWithOffsets needs one token and one offset per id: got "
                             f"{len(self.ids)} ids, {len(self.tokens)} tokens, "
                             f"{len(self.offsets)} offsets")
        bad = [(i, o) for i, o in enumerate(self.offsets) if not 0 <= o[0] <= o[1]]
        if bad:
            raise InputError(f"offsets must satisfy 0 <= start <= end; token {bad[0][0]} has "
                             f"{bad[0][1]}")

    @classmethod
    def from_hf(cls, encoding) -> EncodingWithOffsets:
        """Build from a ``tokenizers.Encoding`` (its offsets are character offsets);
        tokens the post-processor added (BOS/EOS) get ``(0, 0)``."""
        special = encoding.special_tokens_mask
        offsets = [(0, 0) if is_special else span
                   for span, is_special in zip(encoding.offsets, special, strict=True)]
        return cls(list(encoding.ids), list(encoding.tokens), offsets)

    # ---- size ---------------------------------------------------------------------------
    def len(self) -> int:
        """Number of tokens (same as ``len(encoding)``)."""
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def is_empty(self) -> bool:
        return not self.ids

    def tokens_with_offsets(self) -> list[TokenWithOffset]:
        return [TokenWithOffset(t, s, e) for t, (s, e) in zip(self.tokens, self.offsets, strict=True)]

    # ---- lookups ------------------------------------------------------------------------
    def char_to_token(self, char_pos: int) -> int | None:
        """Index of the first token whose span contains ``char_pos``, or None."""
        char_pos = _position("char_pos", char_pos)
        for i, (start, end) in enumerate(self.offsets):
            if start <= char_pos < end:
                return i
        return None

    def char_to_token_fuzzy(self, char_pos: int) -> int | None:
        """Exact lookup if possible, else the token whose span midpoint is nearest
        (first on ties). Tokens without a surface (specials at ``(0, 0)``) are only
        candidates when no other token exists; None only for an empty encoding."""
        exact = self.char_to_token(char_pos)
        if exact is not None:
            return exact
        candidates = [i for i, (s, e) in enumerate(self.offsets) if e > s]
        if not candidates:
            candidates = list(range(len(self.offsets)))
        if not candidates:
            return None
        return min(candidates, key=lambda i: abs(char_pos - _midpoint(self.offsets[i])))

    def char_to_token_start(self, char_pos: int) -> int | None:
        """Index of the first token that starts at or after ``char_pos`` (zero-width
        special tokens are skipped: they have no place in the text), or None."""
        char_pos = _position("char_pos", char_pos)
        for i, (start, end) in enumerate(self.offsets):
            if end > start and start >= char_pos:
                return i
        return None

    def char_range_to_tokens(self, start: int, end: int) -> list[int]:
        """Indices of every token overlapping the character range ``[start, end)``."""
        start, end = _position("start", start), _position("end", end)
        return [i for i, (s, e) in enumerate(self.offsets) if e > start and s < end]

    def token_to_char_range(self, token_idx: int) -> tuple[int, int] | None:
        """Character span ``(start, end)`` of token ``token_idx``, or None if out of range."""
        token_idx = _position("token_idx", token_idx)
        if 0 <= token_idx < len(self.offsets):
            return self.offsets[token_idx]
        return None

    def label_spans(self, spans: Sequence[tuple[str, SpanLike]]) -> list[str]:
        """One label per token: the name of the first span overlapping it, else "other"
        (zero-width tokens are always "other"). The last token of each name is then
        relabelled ``"{name}_final"``, the usual read-out position of a span."""
        ranges = [(name, _as_range(span)) for name, span in spans]
        labels = []
        for start, end in self.offsets:
            hit = next((name for name, (a, b) in ranges if end > start and start < b and end > a),
                       None)
            labels.append("other" if hit is None else hit)
        for name in dict.fromkeys(name for name, _ in ranges):
            last = max((i for i, label in enumerate(labels) if label == name), default=None)
            if last is not None:
                labels[last] = f"{name}_final"
        return labels


def _position(name: str, value: object) -> int:
    """An int position; InputError for floats (never truncated), bools and other types."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an int position, got {type(value).__name__} "
                         f"{value!r:.40}")
    return int(value)


def _midpoint(span: tuple[int, int]) -> int:
    return (span[0] + span[1]) // 2


def _as_range(span: SpanLike) -> tuple[int, int]:
    if isinstance(span, range):
        return span.start, span.stop
    try:
        start, end = span
    except (TypeError, ValueError):
        raise InputError(f"a span must be (start, end) or a range, got {span!r:.60}") from None
    return _position("span start", start), _position("span end", end)


def convert_positions(encoding: EncodingWithOffsets,
                      char_positions: Sequence[int]) -> list[PositionConversion]:
    """Map character positions to tokens: exact when a token contains the character,
    else the nearest token (``exact_match=False``)."""
    if encoding.is_empty():
        raise InputError("cannot convert positions in an empty encoding (no tokens)")
    results = []
    for char_pos in char_positions:
        char_pos = _position("char_positions entry", char_pos)
        exact = encoding.char_to_token(char_pos)
        idx = exact if exact is not None else encoding.char_to_token_fuzzy(char_pos)
        results.append(PositionConversion(int(char_pos), idx, encoding.tokens[idx],
                                          exact is not None))
    return results


class TextForwardResult:
    """The cache of a forward over a text, together with that text's encoding, so that
    character spans can be turned into token positions of the captured tensors."""

    def __init__(self, cache: HookCache, encoding: EncodingWithOffsets, text: str = "") -> None:
        self._cache = cache
        self._encoding = encoding
        self.text = text

    def cache(self) -> HookCache:
        return self._cache

    def encoding(self) -> EncodingWithOffsets:
        return self._encoding

    def output(self) -> torch.Tensor:
        """Logits [1, S, V]."""
        return self._cache.output()

    def require(self, point: HookLike) -> torch.Tensor:
        """The captured tensor at ``point``; HookError if it was not captured."""
        return self._cache.require(point)

    def get(self, point: HookLike) -> torch.Tensor | None:
        return self._cache.get(point)

    def tokens(self) -> list[str]:
        """Raw vocabulary strings of the tokens (e.g. 'ĠParis')."""
        return list(self._encoding.tokens)

    def seq_len(self) -> int:
        return len(self._encoding)

    def __repr__(self) -> str:
        return f"TextForwardResult(seq_len={self.seq_len()}, cache={self._cache!r})"
