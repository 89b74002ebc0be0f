"""Allocate a model's parameters without initialising them.

Every parameter is overwritten by the loader (whose strict accounting proves it), so the
random init torch.nn modules run in their constructors is wasted work. Building directly on
the target device with the initialisers turned into no-ops is cheaper than the meta device,
whose first use imports torch._dynamo (about 1.7 s and 70 MiB per process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# torch.nn.init's in-place initialisers (normal_, kaiming_uniform_, ...).
_INITIALISERS = frozenset(getattr(nn.init, name) for name in dir(nn.init)
                          if name.endswith("_") and not name.startswith("_"))

M = TypeVar("M", bound=nn.Module)


class _SkipParameterInit(TorchFunctionMode):
    """Makes torch.nn.init's initialisers return their tensor untouched."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        if func in _INITIALISERS:
            return args[0] if args else (kwargs or {}).get("tensor")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def allocate_uninitialised(build: Callable[[], M], device: torch.device | str,
                           dtype: torch.dtype) -> M:
    """``build()`` with parameters allocated on ``device`` in ``dtype``, values undefined."""
    with torch.device(device), _default_dtype(dtype), _SkipParameterInit():
        return build()
