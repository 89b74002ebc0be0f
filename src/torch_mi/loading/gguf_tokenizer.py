"""Build a ``tokenizers.Tokenizer`` from a GGUF file's own tokenizer metadata.

A GGUF carries no ``tokenizer.json``: only the vocabulary, merges (byte-level BPE) or
scores (SentencePiece-style), token types and special ids under ``tokenizer.ggml.*``.
We assemble the same pipeline that transformers builds for these files (our oracle) from
``tokenizers`` building blocks, so ids match it exactly:

* ``gpt2``: byte-level BPE with the file's merges, GPT-2 (or the named) split regex.
* ``llama``: SentencePiece-style BPE with byte fallback; merges are recovered from the
  vocabulary, ranked by score (Gemma: by file order, since its scores do not follow the
  merge order) and, within a token, longest left piece first.
"""

from __future__ import annotations

import warnings
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from ..errors import TokenizerError
from ..tokenizer import MITokenizer

SPACE = "\u2581"  # SentencePiece's visible space
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types
GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
SUPPORTED_MODELS = ("gpt2", "llama")

# Split regexes of byte-level vocabularies, by ``tokenizer.ggml.pre`` (the models' published
# pre-tokenizer patterns). Names absent here use GPT-2's built-in ByteLevel regex.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEXES = {"llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
                 "qwen2": _QWEN2_SPLIT}
GPT2_REGEX_PRES = ("default", "gpt-2", "gpt2", "smollm")


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in character for each byte value (index = byte)."""
    keep = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    table, extra = [], 0
    for byte in range(256):
        if byte in keep:
            table.append(chr(byte))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


@dataclass(frozen=True)
class TokenizerSpec:
    """The ``tokenizer.ggml.*`` fields we use, read once from the metadata."""

    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    special_ids: dict[str, int]  # bos / eos / unk / pad / eot -> id
    add_bos: bool
    add_eos: bool

    def token(self, role: str) -> str | None:
        index = self.special_ids.get(role)
        return None if index is None else self.tokens[index]


def read_spec(metadata: dict[str, Any], where: str) -> TokenizerSpec:
    """Collect and type-check the tokenizer metadata (TokenizerError if unusable)."""
    model = metadata.get("tokenizer.ggml.model")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise TokenizerError(f"{where}: the GGUF has no tokenizer (tokenizer.ggml.model/tokens "
                             f"missing); torch-mi builds the tokenizer from this metadata")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens[:1]):
        raise TokenizerError(f"{where}: tokenizer.ggml.tokens must be a list of strings")
    if model not in SUPPORTED_MODELS:
        raise TokenizerError(f"{where}: tokenizer type {model!r} is not supported; supported "
                             f"GGUF tokenizer types: {', '.join(SUPPORTED_MODELS)}")
    tokens = list(tokens)
    types = _per_token(metadata, "token_type", len(tokens), where, "iu")
    scores = _per_token(metadata, "scores", len(tokens), where, "iuf")
    return TokenizerSpec(
        model=model, pre=str(metadata.get("tokenizer.ggml.pre", "default")), tokens=tokens,
        token_types=[1] * len(tokens) if types is None else [int(t) for t in types],
        scores=None if scores is None else [float(s) for s in scores],
        merges=metadata.get("tokenizer.ggml.merges"), special_ids=_special_ids(metadata, tokens),
        add_bos=_flag(metadata, "add_bos_token", model == "llama", where),
        add_eos=_flag(metadata, "add_eos_token", False, where),
    )


def _flag(metadata: dict[str, Any], key: str, default: bool, where: str) -> bool:
    """A boolean ``tokenizer.ggml.*`` key (a bool or 0/1 integer)."""
    value = metadata.get(f"tokenizer.ggml.{key}", default)
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise TokenizerError(f"{where}: tokenizer.ggml.{key} must be true/false, got "
                         f"{str(value)[:60]}")


def _per_token(metadata: dict[str, Any], key: str, count: int, where: str,
               kinds: str) -> list | None:
    """A per-token numeric array (types: integers, scores: numbers) as a list, checked to
    cover every token with finite values of the right kind."""
    values = metadata.get(f"tokenizer.ggml.{key}")
    if values is None:
        return None
    if not isinstance(values, np.ndarray) or values.dtype.kind not in kinds:
        raise TokenizerError(f"{where}: tokenizer.ggml.{key} must be an array of "
                             f"{'integers' if kinds == 'iu' else 'numbers'}")
    if len(values) != count:
        raise TokenizerError(f"{where}: tokenizer.ggml.{key} has {len(values)} entries for "
                             f"{count} tokens; the file is corrupt")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise TokenizerError(f"{where}: tokenizer.ggml.{key} holds NaN or infinite values; the "
                             f"file is corrupt")
    return values.tolist()


def _special_ids(metadata: dict[str, Any], tokens: list[str]) -> dict[str, int]:
    """bos/eos/unk/pad/eot ids; out-of-range ids (llama.cpp writes -1 for none) are absent."""
    ids = {}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"),
                      ("unk", "unknown_token_id"), ("pad", "padding_token_id"),
                      ("eot", "eot_token_id")):
        value = metadata.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int) and 0 <= value < len(tokens):
            ids[role] = value
    return ids


def ranked_merges(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Every split of a scored token into two vocabulary tokens, ranked by the merged
    token's score (best first), then longer left piece, longer right piece, then the
    order of ``scores`` -- the ranking transformers uses for these files.

    Sort keys go to compact arrays (a Gemma vocabulary yields ~500k merges)."""
    pairs: list[tuple[str, str]] = []
    score_key, cut_key, right_key = array("d"), array("q"), array("q")
    for token, score in scores.items():
        size = len(token)
        for cut in range(1, size):
            left = token[:cut]
            if left in vocab:
                right = token[cut:]
                if right in vocab:
                    pairs.append((left, right))
                    score_key.append(score)
                    cut_key.append(cut)
                    right_key.append(size - cut)
    if not pairs:
        return []
    order = np.lexsort((np.arange(len(pairs)), -np.frombuffer(right_key, dtype=np.int64),
                        -np.frombuffer(cut_key, dtype=np.int64),
                        -np.frombuffer(score_key, dtype=np.float64)))
    return [pairs[i] for i in order.tolist()]


def _bpe(where: str, **options: Any) -> Tokenizer:
    """A BPE tokenizer; the Rust side's plain Exceptions become TokenizerErrors."""
    try:
        return Tokenizer(BPE(**options))
    except Exception as exc:  # tokenizers raises bare Exception on bad vocab/merges
        raise TokenizerError(f"{where}: the GGUF vocabulary/merges are inconsistent ({exc})"
                             ) from exc


def _split_merges(merges: list[str], where: str) -> list[tuple[str, str]]:
    if not isinstance(merges, list) or not all(isinstance(m, str) for m in merges[:1]):
        raise TokenizerError(f"{where}: tokenizer.ggml.merges must be a list of strings")
    pairs = [tuple(merge.split(" ")) for merge in merges]
    bad = [m for m, p in zip(merges, pairs, strict=True) if len(p) != 2]
    if bad:
        raise TokenizerError(f"{where}: tokenizer.ggml.merges entries must be 'left right', got "
                             f"{bad[:3]}")
    return pairs  # type: ignore[return-value]


def _byte_level(spec: TokenizerSpec, where: str) -> tuple[Tokenizer, dict[str, int]]:
    """gpt2: byte-level BPE; tokens outside the byte alphabet are respelled byte by byte."""
    alphabet = byte_alphabet()
    chars = set(alphabet)
    vocab = {token if set(token) <= chars
             else "".join(alphabet[b] for b in token.encode("utf-8")): index
             for index, token in enumerate(spec.tokens)}
    if spec.merges is not None:
        merges = _split_merges(spec.merges, where)
    elif spec.scores is not None:
        merges = ranked_merges(vocab, dict(zip(spec.tokens, spec.scores, strict=True)))
    else:
        raise TokenizerError(f"{where}: a gpt2 tokenizer needs tokenizer.ggml.merges (or scores)")
    tokenizer = _bpe(where, vocab=vocab, merges=merges, dropout=None, unk_token=None,
                     continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                     byte_fallback=False)
    tokenizer.pre_tokenizer = _byte_level_split(spec.pre)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer, vocab


def _byte_level_split(pre: str) -> pre_tokenizers.PreTokenizer:
    """The file's named split regex, else GPT-2's (warning when the name is unknown)."""
    if pre in SPLIT_REGEXES:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT_REGEXES[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if pre not in GPT2_REGEX_PRES:
        warnings.warn(f"GGUF tokenizer.ggml.pre={pre!r} is not known to torch-mi; splitting text "
                      f"with GPT-2's regex (as transformers does), which may differ from "
                      f"llama.cpp for some inputs", stacklevel=3)
    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)


def _sentencepiece(spec: TokenizerSpec, architecture: str, add_prefix: bool,
                   where: str) -> tuple[Tokenizer, dict[str, int]]:
    """llama: SentencePiece-style BPE with byte fallback and recovered merges."""
    gemma = architecture in GEMMA_ARCHITECTURES
    tokens = spec.tokens
    if gemma:  # Gemma files store runs of spaces as real spaces; its pipeline sees "▁"s
        tokens = [SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {token: index for index, token in enumerate(tokens)}
    if spec.merges is not None:
        merges = _split_merges(spec.merges, where)
    elif gemma:  # Gemma's scores do not follow its merge order; the file order does
        merges = ranked_merges(vocab, {token: -index for index, token in enumerate(tokens)})
    elif spec.scores is not None:
        merges = ranked_merges(vocab, dict(zip(tokens, spec.scores, strict=True)))
    else:
        raise TokenizerError(f"{where}: a llama tokenizer needs tokenizer.ggml.scores or merges")
    tokenizer = _bpe(where, vocab=vocab, merges=merges, unk_token=spec.token("unk"),
                     fuse_unk=True, byte_fallback=True, dropout=None)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if gemma:
        tokenizer.normalizer = normalizers.Replace(" ", SPACE)
        tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    else:
        scheme = "first" if add_prefix else "never"
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE,
                                                           prepend_scheme=scheme, split=False)
        if add_prefix:
            steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer, vocab


def _add_special_tokens(tokenizer: Tokenizer, spec: TokenizerSpec, vocab: dict[str, int]) -> None:
    """Control tokens and the bos/eos/unk/pad tokens match whole and are special;
    user-defined tokens match whole but are ordinary (llama.cpp's semantics)."""
    byte_level = spec.model == "gpt2"
    chars = set(byte_alphabet()) if byte_level else set()
    control = [token for token, kind in zip(spec.tokens, spec.token_types, strict=True)
               if kind == CONTROL and (not byte_level or set(token) <= chars)]
    roles = [spec.token(role) for role in ("bos", "eos", "unk", "pad")]
    special = list(dict.fromkeys([*control, *(t for t in roles if t is not None)]))
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    known = set(special)
    user = [token for token, kind in zip(spec.tokens, spec.token_types, strict=True)
            if kind == USER_DEFINED and (token in vocab or token in known)]
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])


def _post_processor(spec: TokenizerSpec) -> processors.TemplateProcessing:
    """Add BOS/EOS around each sequence as the file's add_bos/add_eos flags say."""
    bos, eos = spec.token("bos"), spec.token("eos")
    add_bos, add_eos = spec.add_bos and bos is not None, spec.add_eos and eos is not None
    first = f"{bos}:0 " if add_bos else ""
    single = f"{first}$A:0{f' {eos}:0' if add_eos else ''}"
    pair = f"{single}{f' {bos}:1' if add_bos else ''} $B:1{f' {eos}:1' if add_eos else ''}"
    special = []
    if add_bos:
        special.append((bos, spec.special_ids["bos"]))
    if add_eos:
        special.append((eos, spec.special_ids["eos"]))
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)


def has_tokenizer(metadata: dict[str, Any]) -> bool:
    """Whether the file describes a tokenizer at all (some GGUFs carry weights only)."""
    return "tokenizer.ggml.model" in metadata or "tokenizer.ggml.tokens" in metadata


def build_tokenizer(metadata: dict[str, Any], architecture: str, where: str) -> MITokenizer:
    """The model's tokenizer from GGUF metadata, wrapped with its special ids."""
    spec = read_spec(metadata, where)
    if spec.model == "gpt2":
        inner, vocab = _byte_level(spec, where)
    else:
        add_prefix = _flag(metadata, "add_space_prefix", True, where)
        inner, vocab = _sentencepiece(spec, architecture, add_prefix, where)
    try:
        _add_special_tokens(inner, spec, vocab)
        inner.post_processor = _post_processor(spec)
    except Exception as exc:  # tokenizers raises bare Exceptions (a special token it cannot
        # place in a template, e.g. one containing ':' or a space)
        raise TokenizerError(f"{where}: the GGUF special tokens cannot be set up ({exc}); the "
                             f"tokenizer metadata is corrupt") from exc
    eos = tuple(dict.fromkeys(spec.special_ids[r] for r in ("eos", "eot")
                              if r in spec.special_ids))
    return MITokenizer(inner, eos_token_ids=eos, bos_token_id=spec.special_ids.get("bos"),
                       pad_token_id=spec.special_ids.get("pad"))
