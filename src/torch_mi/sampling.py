"""Sampling helpers: pick a token from logits, read a token's probability; and the
argument checks generation shares (an int is an int, a number is a finite real)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch

from .errors import InputError


def _shown(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"an int of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def check_int(name: str, value: object, *, low: int | None = None,
              high: int | None = None) -> int:
    """``value`` as an int in [low, high]; InputError naming ``name`` for a bool, a float
    (2.5 is refused, never truncated), a string or an out-of-range value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {type(value).__name__} {_shown(value)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"{name} must be {span}, got {_shown(value)}")
    return value


def check_real(name: str, value: object, *, low: float | None = None,
               high: float | None = None, hint: str = "") -> float:
    """``value`` as a finite float in [low, high]; InputError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {type(value).__name__} {_shown(value)}"
                         + (f" ({hint})" if hint else ""))
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, got {_shown(value)}"
                         + (f" ({hint})" if hint else ""))
    if (low is not None and number < low) or (high is not None and number > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"{name} must be {span}, got {number}" + (f" ({hint})" if hint else ""))
    return number


def sample_token(logits: torch.Tensor, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> int:
    """Greedy (``temperature <= 0``) or temperature sampling from logits [V] (flattened).

    Pass a seeded ``torch.Generator`` for reproducible sampling.
    """
    if not isinstance(logits, torch.Tensor):
        raise InputError(f"sample_token needs a logits tensor, got {type(logits).__name__}")
    temperature = check_real("temperature", temperature, low=0.0, hint="0 = greedy")
    flat = logits.detach().reshape(-1).float()
    if flat.numel() == 0:
        raise InputError("sample_token got empty logits")
    if bool(torch.isnan(flat).any() | torch.isposinf(flat).any() | torch.isneginf(flat).all()):
        raise InputError("sample_token: the logits hold NaN or +inf (or are all -inf); no "
                         "token can be chosen from them")
    if temperature == 0:
        return int(torch.argmax(flat))
    # Shifted by the maximum so that tiny temperatures cannot overflow to inf/NaN.
    probs = torch.softmax((flat - flat.max()) / temperature, dim=-1)
    if generator is not None and generator.device != probs.device:
        probs = probs.to(generator.device)
    return int(torch.multinomial(probs, 1, generator=generator))


def extract_token_prob(logits: torch.Tensor, token_id: int) -> float:
    """Probability of ``token_id`` at the last position of logits [V], [S,V] or [1,S,V]."""
    if not isinstance(logits, torch.Tensor) or logits.numel() == 0:
        raise InputError(f"extract_token_prob needs non-empty logits, got "
                         f"{type(logits).__name__}")
    if logits.dim() == 3:
        logits = logits[0]
    if logits.dim() == 2:
        logits = logits[-1]
    if logits.dim() != 1:
        raise InputError(f"extract_token_prob expects [V], [S,V] or [1,S,V], got "
                         f"{list(logits.shape)}")
    token_id = check_int("token_id", token_id)
    if not 0 <= token_id < logits.shape[0]:
        raise InputError(f"token id {token_id} outside the vocabulary of size {logits.shape[0]}")
    return float(torch.softmax(logits.float(), dim=-1)[token_id])


@dataclass
class GenerationResult:
    """A finished generation: texts, token counts and the tokens chosen at each step."""

    prompt: str
    full_text: str
    generated_text: str
    prompt_tokens: int
    generated_tokens: int
    total_tokens: int
    token_ids: list[int] = field(default_factory=list)  # prompt + generated
    step_tokens: list[int] = field(default_factory=list)  # generated, one per step
    stop_reason: str = "max_new_tokens"  # or "eos", "stop_string", "stop_id"
