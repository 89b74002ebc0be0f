"""Range checks for config values, shared by the HF and GGUF readers and the dataclasses.

A NaN epsilon, a negative RoPE base or a string soft-cap does not fail where it is read: it
turns every later forward pass into NaN or a TypeError far from the cause. So every number
is checked where it enters, and the error names the key and the value.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from ....errors import ConfigError

# Sizes far beyond any released model; past them the arithmetic itself (tuples of per-layer
# types, float conversions) would be the problem. The memory estimate refuses well below.
MAX_LAYERS = 1 << 20
MAX_WIDTH = (1 << 31) - 1
MAX_POSITIONS = 1 << 40


def is_int(value: Any) -> bool:
    """A true integer (Python or numpy), not a bool (numpy's bool is no Integral)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """An int or float (Python or numpy), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def as_float(value: Any, key: str, where: str, *, positive: bool = False,
             non_negative: bool = False) -> float:
    """``value`` as a finite float (positive / non-negative if asked), else ConfigError."""
    if not is_real(value):
        raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(f"{where}: '{key}' must be a finite number, got {value!r}; fix it in "
                          f"the config")
    if positive and number <= 0:
        raise ConfigError(f"{where}: '{key}' must be positive, got {value!r}")
    if non_negative and number < 0:
        raise ConfigError(f"{where}: '{key}' must not be negative, got {value!r}")
    return number


def optional_float(value: Any, key: str, where: str, *, positive: bool = False) -> float | None:
    """None stays None; anything else goes through :func:`as_float`."""
    return None if value is None else as_float(value, key, where, positive=positive)


def as_count(value: Any, key: str, where: str, *, minimum: int = 0,
             maximum: int = MAX_WIDTH) -> int:
    """``value`` as an int in [minimum, maximum], else ConfigError naming the key."""
    if not is_int(value):
        raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
    number = int(value)
    if number < minimum:
        raise ConfigError(f"{where}: '{key}' must be at least {minimum}, got {number}")
    if number > maximum:
        raise ConfigError(f"{where}: '{key}' = {number} exceeds {maximum:,}, far beyond any "
                          f"model that fits in memory; fix it in the config")
    return number


def float_list(values: Any, key: str, where: str) -> tuple[float, ...] | None:
    """A list of finite positive numbers (LongRoPE factors) as a tuple, None if absent."""
    if values is None:
        return None
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list of numbers, got "
                          f"{str(values)[:80]}")
    return tuple(as_float(v, f"{key}[{i}]", where, positive=True) for i, v in enumerate(values))
