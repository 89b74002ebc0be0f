"""Documents -> fixed-length token sequences -> shard inputs, streamed (memory does not grow
with the dataset).

Two rules (the manifest states the one used):

* pack (SAELens' default convention): documents are encoded without special tokens and
  joined into one stream with a separator before every document but the first; each
  sequence is ``[BOS] + the next seq_len - 1 stream tokens``; the incomplete tail is dropped.
  BOS is the tokenizer's BOS id (its first EOS id when it has none) and is also the separator.
* pad: one sequence per document, encoded with the model's special tokens (as
  ``MITokenizer.encode``), truncated to its first ``seq_len`` tokens and left-padded with the
  tokenizer's padding id (mask 0 on padding, as ``MITokenizer.encode_batch`` pads).
  Documents that encode to no token are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ..tokenizer import MITokenizer
from .errors import DatasetError

ENCODE_GROUP = 64  # documents encoded per tokenizer call (tokenizers batches them natively)


@dataclass
class ShardInput:
    """The sequences of one shard: ids [n, S] int64, mask [n, S] int64 (pad mode) or None."""

    index: int
    first_seq: int
    ids: torch.Tensor
    mask: torch.Tensor | None


def packing_rule(tokenizer: MITokenizer, mode: str, seq_len: int) -> dict:
    """The manifest's ``packing`` entry (also what the sequence builders read)."""
    if mode == "pack":
        bos = tokenizer.bos_token_id
        if bos is None:
            if not tokenizer.eos_token_ids:
                raise DatasetError("packing needs a BOS or EOS token to separate documents; "
                                   "this tokenizer has neither: use mode='pad'")
            bos = tokenizer.eos_token_ids[0]
        return {"mode": "pack", "seq_len": seq_len, "begin_batch_token": int(bos),
                "sequence_separator_token": int(bos), "begin_sequence_token": None,
                "special_tokens": False, "tail": "dropped"}
    if mode == "pad":
        return {"mode": "pad", "seq_len": seq_len, "side": "left",
                "pad_token": int(tokenizer.padding_id), "special_tokens": True,
                "truncation": "first seq_len tokens", "empty_documents": "skipped"}
    raise DatasetError(f"mode must be 'pack' or 'pad', got {mode!r}")


def _encoded(tokenizer: MITokenizer, docs: Iterable[tuple[str, int]], special: bool
             ) -> Iterator[tuple[list[int], int]]:
    """(ids, bytes consumed) per document, encoded in small groups."""
    inner = getattr(tokenizer, "inner", None)
    batched = hasattr(inner, "encode_batch") and type(tokenizer) is MITokenizer
    group: list[tuple[str, int]] = []

    def flush():
        texts = [t for t, _ in group]
        if batched:
            rows = [e.ids for e in inner.encode_batch(texts, add_special_tokens=special)]
        else:
            rows = [tokenizer.encode(t) if special else tokenizer.encode_raw(t) for t in texts]
        out = list(zip(rows, (at for _, at in group), strict=True))
        group.clear()
        return out

    for item in docs:
        group.append(item)
        if len(group) >= ENCODE_GROUP:
            yield from flush()
    if group:
        yield from flush()


def packed_sequences(tokenizer: MITokenizer, docs: Iterable[tuple[str, int]], rule: dict
                     ) -> Iterator[tuple[list[int], None, int]]:
    """(ids, None, bytes consumed) per packed sequence."""
    seq_len, bos, sep = rule["seq_len"], rule["begin_batch_token"], rule["sequence_separator_token"]
    body = seq_len - 1
    buffer: list[int] = []
    first = True
    for ids, at in _encoded(tokenizer, docs, special=False):
        if not ids:
            continue
        if not first:
            buffer.append(sep)
        first = False
        buffer.extend(ids)
        start = 0
        while len(buffer) - start >= body:
            yield [bos, *buffer[start:start + body]], None, at
            start += body
        del buffer[:start]


def padded_sequences(tokenizer: MITokenizer, docs: Iterable[tuple[str, int]], rule: dict
                     ) -> Iterator[tuple[list[int], list[int], int]]:
    """(ids, mask, bytes consumed) per document: left-padded to seq_len."""
    seq_len, pad = rule["seq_len"], rule["pad_token"]
    for ids, at in _encoded(tokenizer, docs, special=True):
        if not ids:
            continue
        ids = ids[:seq_len]
        fill = seq_len - len(ids)
        yield [pad] * fill + ids, [0] * fill + [1] * len(ids), at


def shard_inputs(sequences: Iterable[tuple[list[int], list[int] | None, int]],
                 seqs_per_shard: int, max_sequences: int | None
                 ) -> Iterator[tuple[ShardInput, int]]:
    """Cut the sequence stream into shards: sequence i goes to shard i // seqs_per_shard.
    Yields (shard input, bytes of the dataset consumed)."""
    rows: list[list[int]] = []
    masks: list[list[int]] = []
    index = at = 0
    for total, (ids, mask, at) in enumerate(sequences):
        if max_sequences is not None and total >= max_sequences:
            break
        rows.append(ids)
        if mask is not None:
            masks.append(mask)
        if len(rows) == seqs_per_shard:
            yield _make(index, index * seqs_per_shard, rows, masks), at
            index += 1
            rows, masks = [], []
    if rows:
        yield _make(index, index * seqs_per_shard, rows, masks), at


def _make(index: int, first_seq: int, rows: list[list[int]], masks: list[list[int]]) -> ShardInput:
    ids = torch.tensor(rows, dtype=torch.long)  # [n, S]
    mask = torch.tensor(masks, dtype=torch.long) if masks else None
    return ShardInput(index, first_seq, ids, mask)
