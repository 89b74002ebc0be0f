"""Range checks of CLI option values.

argparse checks only that ``--top-k`` is an int and ``--temperature`` a float; these check
what the value means (``-1``, ``nan``, ``''``) and run before the model loads, so a bad
value fails in milliseconds with an ``InputError`` that names the option and the value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ..errors import InputError


def at_least(option: str, value: int | None, minimum: int, what: str = "") -> None:
    """``value`` is None (option not given) or an int >= ``minimum``."""
    if value is not None and value < minimum:
        hint = f" ({what})" if what else ""
        raise InputError(f"{option} must be >= {minimum}, got {value}{hint}")


def finite(option: str, value: float | None, *, minimum: float | None = None,
           maximum: float | None = None, exclusive_min: bool = False) -> None:
    """``value`` is None or a finite float inside the given bounds."""
    if value is None:
        return
    if not math.isfinite(value):
        raise InputError(f"{option} must be a finite number, got {value}")
    low_ok = minimum is None or (value > minimum if exclusive_min else value >= minimum)
    if not low_ok or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else f"{minimum:g}"
        high = "inf" if maximum is None else f"{maximum:g}"
        bracket = "(" if exclusive_min else "["
        raise InputError(f"{option} must be in {bracket}{low}, {high}], got {value:g}")


def non_empty(option: str, value: str | Sequence[str] | None) -> None:
    """A text option (or each text of a repeatable option) is not the empty string."""
    values = [value] if isinstance(value, str) else list(value or ())
    for text in values:
        if text == "":
            raise InputError(f"{option} must not be empty: give a token or text, or leave "
                             f"the option out for the default")


def int_list(option: str, text: str | None) -> list[int] | None:
    """``"0,2,3"`` -> ``[0, 2, 3]``; None stays None (the option's default)."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(_is_plain_int(part) for part in parts):
        raise InputError(f"{option} must be comma-separated integers such as 0,2,3, got {text!r}")
    return [int(part) for part in parts]


def float_list(option: str, text: str) -> tuple[float, ...]:
    """``"0,0.5,2"`` -> finite floats; NaN and infinities are refused."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"{option} must be comma-separated numbers, got {text!r}") from None
    for value in values:
        finite(option, value)
    return values


def indices_below(option: str, values: Iterable[int], bound: int, what: str) -> None:
    """Every index is in ``[0, bound)`` (heads of a model, say)."""
    for value in values:
        if not 0 <= value < bound:
            raise InputError(f"{option}: {value} is out of range; the model has {bound} {what} "
                             f"(0..{bound - 1})")


def _is_plain_int(text: str) -> bool:
    """At most 18 ASCII digits with an optional minus sign (no '١', '1_000' or '+-')."""
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit() and len(digits) <= 18
