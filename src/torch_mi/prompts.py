"""Prompt or ids -> token ids: the one place analyses turn what a user typed into a batch.

A prompt is text (encoded with the model's tokenizer, special tokens added), a list of
ints, or a [S] / [1,S] integer tensor. Anything else is an InputError naming what was given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import InputError
from .model import LanguageModel

Prompt = str | Sequence[int] | torch.Tensor


def prompt_ids(model: LanguageModel, prompt: Prompt) -> torch.Tensor:
    """Token ids [1, S] (int64, on the model's device) of one prompt."""
    if isinstance(prompt, str):
        return model.encode(prompt)
    if isinstance(prompt, torch.Tensor):
        if prompt.dim() == 2 and prompt.shape[0] != 1:
            raise InputError(f"expected one prompt, got a batch of {prompt.shape[0]} "
                             f"(ids of shape {list(prompt.shape)}); pass one row")
        if prompt.dim() > 2:
            raise InputError(f"prompt ids must be [S] or [1, S], got {list(prompt.shape)}")
        if prompt.is_floating_point() or prompt.is_complex() or prompt.dtype == torch.bool:
            raise InputError(f"prompt ids must be integers, got dtype {prompt.dtype}")
        return prompt.reshape(1, -1).to(device=model.device, dtype=torch.long)
    if isinstance(prompt, Sequence) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt):
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
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 2:
            return [prompt_ids(model, row)[0].tolist() for row in prompts], False
        return [prompt_ids(model, prompts)[0].tolist()], True
    if isinstance(prompts, str):
        return [prompt_ids(model, prompts)[0].tolist()], True
    prompts = list(prompts)
    if not prompts:
        raise InputError("at least one prompt is needed")
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompts):
        return [prompt_ids(model, prompts)[0].tolist()], True
    return [prompt_ids(model, p)[0].tolist() for p in prompts], False
