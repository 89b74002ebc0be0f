"""Validation of model inputs: token ids, attention masks and residual vectors, checked
before any work. Floats are refused, never truncated: ``[[1.7, 5.9]]`` is not ``[[1, 5]]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError


def _ids_tensor(input_ids: object) -> torch.Tensor:
    """Lists (or arrays) of ids as a tensor of their own dtype (no cast, so floats stay
    floats and are refused below)."""
    if isinstance(input_ids, (str, bytes, dict, set)) or input_ids is None:
        raise InputError(f"input_ids must be token ids (a tensor or lists of ints of equal "
                         f"length), got {type(input_ids).__name__}; encode text with "
                         f"model.encode(text)")
    try:
        return torch.tensor(input_ids)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise InputError(
            f"input_ids must be token ids (a tensor or lists of ints of equal length): {exc}"
        ) from None


def _first_non_integer(ids: torch.Tensor) -> str:
    """' (e.g. 1.7 at [0, 0])' for a float tensor, '' otherwise."""
    if not ids.is_floating_point() or ids.numel() == 0:
        return ""
    fractional = ids != ids.trunc()
    where = fractional.nonzero()[0].tolist() if bool(fractional.any()) else [0] * ids.dim()
    return f" (e.g. {ids[tuple(where)].item():.6g} at {where})"


def check_input_ids(input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
                    vocab_size: int, device: torch.device) -> torch.Tensor:
    """Return ids as an int64 [B,S] tensor on ``device``; InputError for anything invalid.

    Accepts a [B,S] or [S] integer tensor, a list of ints or a list of equal-length lists.
    """
    if not isinstance(input_ids, torch.Tensor):
        input_ids = _ids_tensor(input_ids)
    if input_ids.numel() == 0:
        raise InputError(f"empty input: input_ids has shape {list(input_ids.shape)}; give at "
                         f"least one token (an empty prompt encodes to no tokens without a BOS)")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise InputError(
            f"input_ids must hold integer token ids, got dtype {input_ids.dtype}"
            f"{_first_non_integer(input_ids)}; floats are refused, not truncated: pass the "
            f"ids from model.encode(), or .long() them if they are whole numbers")
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must be [batch, seq] (or [seq]), got shape "
                         f"{list(input_ids.shape)}")
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
        try:
            mask = torch.tensor(mask)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise InputError(f"attention_mask must be a [batch, positions] tensor or lists of "
                             f"0/1 of equal length, got {type(mask).__name__}: {exc}") from None
    if tuple(mask.shape) != (batch, total_len):
        raise InputError(
            f"attention_mask has shape {list(mask.shape)}, expected [{batch}, {total_len}] "
            f"(batch, cached + new positions)"
        )
    if mask.is_complex():
        raise InputError(f"attention_mask must contain only 0 and 1, got dtype {mask.dtype}")
    values = torch.unique(mask)
    if not bool(((values == 0) | (values == 1)).all()):
        raise InputError(f"attention_mask must contain only 0 and 1, got values "
                         f"{values.tolist()[:10]}")
    return mask.to(device)


def check_residual(hidden: object, hidden_size: int, what: str) -> torch.Tensor:
    """A real floating tensor [..., hidden_size]; InputError naming ``what`` otherwise."""
    if not isinstance(hidden, torch.Tensor):
        raise InputError(f"{what} needs a residual tensor [..., {hidden_size}], got "
                         f"{type(hidden).__name__}")
    if not hidden.is_floating_point():
        raise InputError(f"{what} needs a floating-point residual [..., {hidden_size}], got "
                         f"dtype {hidden.dtype}")
    if hidden.dim() == 0 or hidden.shape[-1] != hidden_size:
        raise InputError(f"{what} needs a residual [..., {hidden_size}] (the model's hidden "
                         f"size), got shape {list(hidden.shape)}")
    return hidden
