"""``pytest.raises`` that also demands the exact class.

``pytest.raises(mi.HookError)`` passes for any subclass (``HookTypeError``, or one added
later), but the catalogue promises the exact MIError subclass a caller would catch, so
every catalogue case goes through ``raises_exactly``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from torch_mi.errors import MIError


@contextmanager
def raises_exactly(error: type[BaseException], match: str | None = None
                   ) -> Iterator[pytest.ExceptionInfo]:
    """Like ``pytest.raises(error, match=match)``, but ``type(exc) is error``; for MIError
    classes the message must also be non-empty (it has to name the culprit)."""
    with pytest.raises(error, match=match) as caught:
        yield caught
    got = caught.value
    assert type(got) is error, f"expected exactly {error.__name__}, got {type(got).__name__}: {got}"
    if issubclass(error, MIError):
        assert str(got).strip(), f"{error.__name__} with an empty message"
