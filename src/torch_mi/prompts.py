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
