"""MITokenizer: a thin, typed wrapper over a HuggingFace ``tokenizers.Tokenizer``."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer

from .errors import InputError, TokenizerError
from .positions import EncodingWithOffsets

DECODE_ERRORS = ("strict", "replace", "ignore", "backslashreplace")


def check_decode_errors(errors: object) -> None:
    """TokenizerError unless ``errors`` is one of :data:`DECODE_ERRORS`."""
    if not isinstance(errors, str) or errors not in DECODE_ERRORS:
        raise TokenizerError(f"errors must be one of {DECODE_ERRORS}, got {errors!r:.40}")


class MITokenizer:
    """Encode/decode text for a model. ``encode`` adds the model's special tokens (e.g. BOS
    for LLaMA/Gemma); ``encode_raw`` does not. ``decode`` keeps special tokens."""

    def __init__(self, tokenizer: Tokenizer, *, eos_token_ids: tuple[int, ...] = (),
                 bos_token_id: int | None = None, pad_token_id: int | None = None) -> None:
        if not isinstance(tokenizer, Tokenizer):
            raise TokenizerError(f"MITokenizer wraps a tokenizers.Tokenizer, got "
                                 f"{type(tokenizer).__name__}")
        self.inner = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)
        self.bos_token_id = bos_token_id
        self.pad_token_id = pad_token_id

    @classmethod
    def from_file(cls, path: str | os.PathLike, **special: object) -> MITokenizer:
        """Load a ``tokenizer.json`` file (or a directory containing one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise TokenizerError(f"no tokenizer file at {path}; the model folder needs a "
                                 f"tokenizer.json (HF fast tokenizer format)")
        try:
            inner = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exceptions
            raise TokenizerError(f"cannot load tokenizer {path}: {exc}") from exc
        return cls(inner, **special)  # type: ignore[arg-type]

    from_hf_path = from_file

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids with the model's special tokens added (e.g. BOS)."""
        return self._encode(text, add_special_tokens=True).ids

    def encode_raw(self, text: str) -> list[int]:
        """Token ids without special tokens."""
        return self._encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> EncodingWithOffsets:
        """Ids, token strings and character offsets (special tokens added, at ``(0, 0)``)."""
        return EncodingWithOffsets.from_hf(self._encode(text, add_special_tokens=True))

    def encode_raw_with_offsets(self, text: str) -> EncodingWithOffsets:
        """Ids, token strings and character offsets, without special tokens."""
        return EncodingWithOffsets.from_hf(self._encode(text, add_special_tokens=False))

    def _encode(self, text: str, add_special_tokens: bool):
        if not isinstance(text, str):
            raise TokenizerError(f"encode needs a str, got {type(text).__name__}")
        try:
            return self.inner.encode(text, add_special_tokens=add_special_tokens)
        except Exception as exc:
            raise TokenizerError(f"cannot encode {text[:40]!r}: {exc}") from exc

    def encode_batch(self, texts: list[str], *, add_special_tokens: bool = True,
                     padding_side: str = "left"):
        """Encode several texts into ``(ids, attention_mask)``, both [B, T] int64.

        Shorter rows are padded (left by default, as generation needs) with the pad id
        (or the first EOS, or 0); the mask is 1 on real tokens and 0 on padding.
        """
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise TokenizerError(f"encode_batch needs a non-empty list of strings, got "
                                 f"{type(texts).__name__}")
        rows = [self._encode(t, add_special_tokens).ids for t in texts]
        return pad_batch(rows, self.padding_id, padding_side)

    @property
    def padding_id(self) -> int:
        if self.pad_token_id is not None:
            return int(self.pad_token_id)
        return int(self.eos_token_ids[0]) if self.eos_token_ids else 0

    # ---- decoding -------------------------------------------------------------------------
    def decode(self, ids, errors: str = "strict") -> str:
        """Text of ``ids`` (special tokens kept): a flat list or 1-D tensor of integer ids;
        floats are refused, never truncated.

        ``errors`` says what to do with ids whose bytes are not valid UTF-8 (a sequence cut
        inside a multi-byte character): "strict" (default) raises TokenizerError where the
        tokenizer can tell, "replace" gives U+FFFD, "ignore" drops the bytes,
        "backslashreplace" shows them as ``\\xHH``. HF byte-level tokenizers decode lossily
        (U+FFFD) whatever ``errors`` says; the RWKV world tokenizer honours every mode.
        Generation decodes with "replace" where text is only matched or displayed."""
        check_decode_errors(errors)
        ids = self._id_list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"token ids {bad[:5]} are outside the vocabulary "
                                 f"(0..{self.vocab_size - 1})")
        return self.inner.decode(ids, skip_special_tokens=False)

    @staticmethod
    def _id_list(ids) -> list[int]:
        """``ids`` as a list of Python ints; TokenizerError naming the first bad entry."""
        if isinstance(ids, torch.Tensor):
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                raise TokenizerError(f"decode needs integer token ids, got a tensor of dtype "
                                     f"{ids.dtype}; floats are refused, not truncated")
            if ids.dim() > 1:
                raise TokenizerError(f"decode needs a flat list of ids, got a tensor of shape "
                                     f"{list(ids.shape)}; decode one row at a time")
            return [int(i) for i in ids.reshape(-1).tolist()]
        if hasattr(ids, "tolist") and not isinstance(ids, (str, bytes)):  # numpy arrays
            ids = ids.tolist()
            ids = ids if isinstance(ids, list) else [ids]
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (list, tuple, range)):
            raise TokenizerError(f"decode needs a list of int token ids, got "
                                 f"{type(ids).__name__}")
        for i, value in enumerate(ids):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TokenizerError(f"decode needs int token ids; entry {i} is "
                                     f"{type(value).__name__} {value!r:.40} (floats are "
                                     f"refused, not truncated)")
        return [int(i) for i in ids]

    def decode_token(self, token_id: int) -> str:
        return self.decode([token_id])

    def id_to_token(self, token_id: int) -> str | None:
        """The raw vocabulary string of a token (e.g. 'ĠParis'), or None."""
        (token_id,) = self._id_list([token_id])
        if not 0 <= token_id < self.vocab_size:
            return None
        return self.inner.id_to_token(token_id)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size including added tokens."""
        return self.inner.get_vocab_size(with_added_tokens=True)

    def find_token_id(self, word: str) -> int:
        """Id of ``word`` as one token in running text, strictly.

        Tries ``" " + word`` then ``word`` (no special tokens); the first that is exactly one
        token wins. Otherwise TokenizerError naming both tokenisations: a word split into
        several tokens has no single id (this used to return the last sub-token, e.g.
        ``"buquerque"`` for ``"Albuquerque"``). For the exact string use
        :meth:`to_single_token`."""
        if not isinstance(word, str) or not word:
            raise TokenizerError(f"find_token_id needs a non-empty word, got {word!r:.40}; an "
                                 f"empty target would silently pick some token")
        spaced = self.encode_raw(" " + word)
        if len(spaced) == 1:
            return spaced[0]
        bare = self.encode_raw(word)
        if len(bare) == 1:
            return bare[0]
        raise TokenizerError(f"{word!r} is not a single token: {(' ' + word)!r} encodes to "
                             f"{self._pieces(spaced)} and {word!r} to {self._pieces(bare)}; "
                             f"pick one token (see to_str_tokens) or pass a token id")

    # ---- TransformerLens-style helpers ---------------------------------------------------------
    def to_single_token(self, text: str) -> int:
        """Id of ``text`` when it is exactly one token (no BOS, no space added), as TL's
        ``to_single_token``; TokenizerError naming the string and its tokenisation otherwise."""
        if not isinstance(text, str) or not text:
            raise TokenizerError(f"to_single_token needs a non-empty str, got {text!r:.40}")
        ids = self.encode_raw(text)
        if len(ids) == 1:
            return ids[0]
        hint = ""
        if not text.startswith(" ") and len(self.encode_raw(" " + text)) == 1:
            hint = f"; {(' ' + text)!r} (with a leading space) is one token"
        raise TokenizerError(f"{text!r} is not a single token: it encodes to {len(ids)} tokens "
                             f"{self._pieces(ids)}{hint}")

    def tokens_for(self, text: str, prepend_bos: bool | None = None) -> list[int]:
        """Ids of ``text``: ``prepend_bos=None`` as :meth:`encode` (the tokenizer's own special
        tokens, what ``model.encode`` feeds the model); ``True`` exactly one BOS first (the
        EOS when there is no BOS, as TL does); ``False`` none (:meth:`encode_raw`)."""
        if prepend_bos is not None and not isinstance(prepend_bos, bool):
            raise TokenizerError(f"prepend_bos must be True, False or None, got "
                                 f"{prepend_bos!r:.40}")
        if prepend_bos is None:
            return self.encode(text)
        raw = self.encode_raw(text)
        if not prepend_bos:
            return raw
        bos = self.bos_token_id if self.bos_token_id is not None else (
            self.eos_token_ids[0] if self.eos_token_ids else None)
        if bos is None:
            raise TokenizerError("prepend_bos=True but this tokenizer has no BOS (or EOS) "
                                 "token; use prepend_bos=False or None")
        return [int(bos), *raw]

    def to_str_tokens(self, tokens, prepend_bos: bool | None = None) -> list:
        """Each token as its own decoded string, as TL's ``to_str_tokens``: text (encoded with
        :meth:`tokens_for`), a list of texts (a list per text), or ids (a list, a 1-D tensor
        or a [1, S] tensor; ``prepend_bos`` applies to text only)."""
        if isinstance(tokens, str):
            ids = self.tokens_for(tokens, prepend_bos)
        elif isinstance(tokens, (list, tuple)) and tokens and all(
                isinstance(t, str) for t in tokens):
            return [self.to_str_tokens(t, prepend_bos) for t in tokens]
        else:
            ids = self._id_row(tokens, "to_str_tokens")
        return [self.decode([i]) for i in ids]

    def get_token_position(self, single_token, tokens, *, mode: str = "first",
                           prepend_bos: bool | None = None) -> int:
        """Position of ``single_token`` (a one-token string, see :meth:`to_single_token`, or
        an id) in ``tokens`` (text, a list of ids, a 1-D or [1, S] tensor), as TL's
        ``get_token_position``; ``mode`` "first" or "last". InputError if it is absent."""
        if mode not in ("first", "last"):
            raise InputError(f"mode must be 'first' or 'last', got {mode!r:.40}")
        if isinstance(single_token, str):
            target = self.to_single_token(single_token)
        else:
            (target,) = self._id_row(single_token, "get_token_position (single_token)",
                                     one=True)
        ids = (self.tokens_for(tokens, prepend_bos) if isinstance(tokens, str)
               else self._id_row(tokens, "get_token_position"))
        found = [i for i, t in enumerate(ids) if t == target]
        if not found:
            raise InputError(f"token {target} ({self.decode([target])!r}) does not occur in the "
                             f"input {self._pieces(ids)}")
        return found[0] if mode == "first" else found[-1]

    def _id_row(self, tokens, what: str, one: bool = False) -> list[int]:
        """One row of token ids from a list, a 0/1-D tensor or a [1, S] tensor."""
        if isinstance(tokens, torch.Tensor) and tokens.dim() == 2 and tokens.shape[0] == 1:
            tokens = tokens[0]
        elif isinstance(tokens, torch.Tensor) and tokens.dim() == 0:
            tokens = tokens.reshape(1)
        elif isinstance(tokens, numbers.Integral) and not isinstance(tokens, bool):
            tokens = [tokens]
        if isinstance(tokens, torch.Tensor) and tokens.dim() != 1:
            raise TokenizerError(f"{what} needs ids of shape [S] or [1, S], got a tensor of "
                                 f"shape {list(tokens.shape)}; pass one row at a time")
        ids = self._id_list(tokens)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad or (one and len(ids) != 1):
            raise TokenizerError(f"{what} needs {'one token id' if one else 'token ids'} in "
                                 f"0..{self.vocab_size - 1}, got {ids[:5]!r}")
        return ids

    def _pieces(self, ids: list[int]) -> list[str]:
        """The token strings of ``ids`` for error messages (at most 12)."""
        return [self.decode([i]) for i in ids[:12]] + (["..."] if len(ids) > 12 else [])

    def __repr__(self) -> str:
        return f"MITokenizer(vocab_size={self.vocab_size})"


def pad_batch(rows: list[list[int]], pad_id: int, side: str = "left"):
    """Stack token rows of unequal length into padded ``(ids, mask)`` tensors [B, T]."""
    if side not in ("left", "right"):
        raise TokenizerError(f"padding_side must be 'left' or 'right', got {side!r}")
    if not rows:
        raise TokenizerError("pad_batch needs at least one row of token ids")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
