"""Gradient taps: make a hook point's tensor part of a live autograd graph.

The model's weights and embeddings are frozen (``requires_grad=False``), so nothing in a
forward requires grad and ``loss.backward()`` has nowhere to go. A *tap* adds a 0-dim zero
that requires grad (``x + 0``: same values, a fresh tensor, no copy of any weight), which
puts ``x`` and everything computed from it into the graph. A point that already requires
grad (downstream of another tap, or of a user's ``Add(delta)`` with ``delta.requires_grad``)
is not tapped again. Parameters stay frozen.

A spec that keeps gradients runs its forward with grad enabled even inside
``torch.no_grad()`` (asking for gradients is explicit); ``torch.inference_mode()`` cannot
record a graph at all, so it is refused with :class:`HookError`.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import HookError


def tap(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as a non-leaf of a live graph (itself if it already requires grad)."""
    if tensor.requires_grad or not (tensor.is_floating_point() or tensor.is_complex()):
        return tensor
    zero = torch.zeros((), dtype=tensor.dtype, device=tensor.device, requires_grad=True)
    return tensor + zero


def grad_mode(needs_grad: bool) -> contextlib.AbstractContextManager:
    """The autograd mode a forward runs in: grad enabled when the spec keeps gradients.

    Raises HookError under ``torch.inference_mode()``, which records no graph.
    """
    if not needs_grad:
        return contextlib.nullcontext()
    if torch.is_inference_mode_enabled():
        raise HookError(
            "this HookSpec asks for gradients (keep_grad=True or capture_grad) but the "
            "forward runs under torch.inference_mode(), which cannot record a graph; call "
            "it outside inference_mode (torch.no_grad() is fine: gradients are enabled "
            "for the forward)")
    return torch.enable_grad()
