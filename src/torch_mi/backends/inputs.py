"""Validation of model inputs: token ids and attention masks, checked before any work."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError


def check_input_ids(input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
                    vocab_size: int, device: torch.device) -> torch.Tensor:
    """Return ids as an int64 [B,S] tensor on ``device``; InputError for anything invalid.

    Accepts a [B,S] or [S] tensor, a list of ints or a list of equal-length lists.
    """
    if not isinstance(input_ids, torch.Tensor):
        try:
            input_ids = torch.tensor(input_ids, dtype=torch.long)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"input_ids must be token ids (a tensor or lists of ints of equal length): {exc}"
            ) from None
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise InputError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must be [batch, seq] (or [seq]), got shape "
                         f"{list(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise InputError(f"empty input: input_ids has shape {list(input_ids.shape)}; give at "
                         f"least one token (an empty prompt encodes to no tokens without a BOS)")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        where = (input_ids == bad).nonzero()[0].tolist()
        raise InputError(
            f"token id {bad} at position {where} is outside the vocabulary (0..{vocab_size - 1}); "
            f"was the text encoded with this model's tokenizer?"
        )
    return input_ids.to(device=device, dtype=torch.long)


def check_attention_mask(mask: torch.Tensor, batch: int, total_len: int,
                         device: torch.device) -> torch.Tensor:
    """A [B, past+S] 0/1 mask on ``device``; InputError if its shape or values are wrong."""
    if not isinstance(mask, torch.Tensor):
        mask = torch.tensor(mask)
    if tuple(mask.shape) != (batch, total_len):
        raise InputError(
            f"attention_mask has shape {list(mask.shape)}, expected [{batch}, {total_len}] "
            f"(batch, cached + new positions)"
        )
    values = torch.unique(mask)
    if not bool(((values == 0) | (values == 1)).all()):
        raise InputError(f"attention_mask must contain only 0 and 1, got values {values.tolist()}")
    return mask.to(device)
