"""Prompt or ids -> token ids: the one place analyses turn what a user typed into a batch.

A prompt is text (encoded with the model's tokenizer, special tokens added), a list of
ints, or a [S] / [1,S] integer tensor. Anything else is an InputError naming what was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InputError
from .model import LanguageModel
from .tokenizer import pad_batch

Prompt = str | Sequence[int] | torch.Tensor


def prompt_ids(model: LanguageModel, prompt: Prompt) -> torch.Tensor:
    """Token ids [1, S] (int64, on the model's device) of one prompt."""
    if isinstance(prompt, str):
        return model.encode(prompt)
    if isinstance(prompt, torch.Tensor):
        if prompt.numel() == 0:
            raise InputError(f"empty prompt: ids of shape {list(prompt.shape)}; give at least "
                             f"one token")
        if prompt.dim() == 2 and prompt.shape[0] != 1:
            raise InputError(f"expected one prompt, got a batch of {prompt.shape[0]} "
                             f"(ids of shape {list(prompt.shape)}); pass one row")
        if prompt.dim() > 2:
            raise InputError(f"prompt ids must be [S] or [1, S], got {list(prompt.shape)}")
        if prompt.is_floating_point() or prompt.is_complex() or prompt.dtype == torch.bool:
            raise InputError(f"prompt ids must be integers, got dtype {prompt.dtype}")
        return prompt.reshape(1, -1).to(device=model.device, dtype=torch.long)
    if isinstance(prompt, (list, tuple)):
        bad = next(((i, t) for i, t in enumerate(prompt)
                    if isinstance(t, bool) or not isinstance(t, int)), None)
        if bad is not None:
            raise InputError(f"prompt ids must be ints; entry {bad[0]} is "
                             f"{type(bad[1]).__name__} {bad[1]!r:.60} (floats are refused, "
                             f"not truncated)")
        if any(not -(2 ** 63) <= t < 2 ** 63 for t in prompt):
            raise InputError("prompt ids must be token ids of this model's vocabulary; one "
                             "does not even fit in 64 bits")
        return torch.tensor([list(prompt)], dtype=torch.long, device=model.device)
    raise InputError(f"a prompt is text, a list of token ids or an id tensor; got "
                     f"{type(prompt).__name__}")


def prompt_text(model: LanguageModel, prompt: Prompt, ids: torch.Tensor) -> str:
    """The text of a prompt: itself if it is text, else the decoded ids ('' without a
    tokenizer)."""
    if isinstance(prompt, str):
        return prompt
    tok = model.tokenizer
    return tok.decode(ids[0].tolist()) if tok is not None else ""


def prompt_rows(model: LanguageModel, prompts: Prompt | Sequence[Prompt]
                ) -> tuple[list[list[int]], bool]:
    """(token rows, single?) for one prompt or a list of prompts (text or ids)."""
    if prompts is None or isinstance(prompts, (bytes, bytearray, dict, set)) or not isinstance(
            prompts, (str, torch.Tensor, list, tuple)):
        raise InputError(f"prompt must be text, a list of token ids, an id tensor or a list of "
                         f"those; got {type(prompts).__name__}")
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 2:
            return [prompt_ids(model, row)[0].tolist() for row in prompts], False
        return [prompt_ids(model, prompts)[0].tolist()], True
    if isinstance(prompts, str):
        return [prompt_ids(model, prompts)[0].tolist()], True
    prompts = list(prompts)
    if not prompts:
        raise InputError("at least one prompt is needed")
    if all(isinstance(p, (int, float)) for p in prompts):  # one prompt of ids (floats refused)
        return [prompt_ids(model, prompts)[0].tolist()], True
    return [prompt_ids(model, p)[0].tolist() for p in prompts], False


@dataclass
class PromptBatch:
    """Several prompts as one left-padded batch: ids and attention mask [B, T] on the
    model's device (1 real, 0 padding), the unpadded rows, and whether one prompt (not a
    list) was given. Left padding keeps every row's last token in column T-1, and the
    model derives positions from the mask, so a padded row computes what it would alone."""

    ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    rows: list[list[int]]
    single: bool

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])

    def offset(self, row: int) -> int:
        """Padding columns in front of ``row`` (its token p sits in column offset + p)."""
        return self.width - len(self.rows[row])

    @property
    def attention_mask(self) -> torch.Tensor | None:
        """The mask to pass to ``forward``: None when no row is padded (the plain causal
        path, bit-identical to an unbatched call)."""
        return self.mask if bool((self.mask == 0).any()) else None

    def real(self, row: int) -> slice:
        """The columns of ``row``'s real tokens."""
        return slice(self.offset(row), self.width)


def prompt_batch(model: LanguageModel, prompts: Prompt | Sequence[Prompt]) -> PromptBatch:
    """One prompt or a list of prompts (text or ids) as a left-padded :class:`PromptBatch`;
    InputError for an empty list, an item that is not a prompt, or a prompt of no tokens."""
    rows, single = prompt_rows(model, prompts)
    empty = next((i for i, r in enumerate(rows) if not r), None)
    if empty is not None:
        raise InputError(f"prompt {empty} encodes to no tokens; give at least one token")
    tok = model.tokenizer
    ids, mask = pad_batch(rows, tok.padding_id if tok is not None else 0, "left")
    return PromptBatch(ids.to(model.device), mask.to(model.device), rows, single)
