"""RwkvState: the recurrent state carried across ``forward(..., state=)`` calls.

Per layer: the time-mix token-shift vector (the last position's ``ln1`` output [B,D]), the
WKV matrix [B,H,d(key),d(value)] in fp32, and the channel-mix token-shift vector (the last
``ln2`` output [B,D]). A forward computes the new per-layer values on the side and
:meth:`RwkvState.commit` installs them only after the whole call succeeded, so a call that
raises leaves the state exactly as it was (no rollback needed: nothing was written).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InputError


@dataclass(frozen=True)
class LayerState:
    """One layer's recurrent state (tensors are never modified in place)."""

    att_x: torch.Tensor  # [B,D] last ln1 output (time-mix shift)
    wkv: torch.Tensor  # [B,H,d,d] fp32, rows = key dim, columns = value dim
    ffn_x: torch.Tensor  # [B,D] last ln2 output (channel-mix shift)


class RwkvState:
    """Recurrent state of one GenericRwkv for one batch (from ``model.make_state()``)."""

    def __init__(self, owner: object, num_layers: int) -> None:
        self._owner = owner  # the model's identity token (not the model: no reference cycle)
        self.layers: list[LayerState] | None = None  # None until the first forward
        self.seen_tokens = 0
        self._num_layers = num_layers

    def batch_size(self) -> int | None:
        return None if self.layers is None else self.layers[0].att_x.shape[0]

    def is_empty(self) -> bool:
        return self.layers is None

    def check_for(self, owner: object, batch: int) -> None:
        """InputError unless this state belongs to the model ``owner`` and fits ``batch``."""
        if owner is not self._owner:
            raise InputError("state: this RwkvState was made by another model; use "
                             "model.make_state() of the model you run")
        held = self.batch_size()
        if held is not None and held != batch:
            raise InputError(f"state: this RwkvState holds a batch of {held} sequence(s), the "
                             f"input_ids have batch {batch}; pass {held} rows, or start a new "
                             f"state with model.make_state()")

    def layer(self, layer: int) -> LayerState | None:
        """Layer ``layer``'s state, or None before the first forward."""
        if isinstance(layer, bool) or not isinstance(layer, int) \
                or not 0 <= layer < self._num_layers:
            raise InputError(f"RwkvState has {self._num_layers} layers; layer {layer!r} is out "
                             f"of range")
        return None if self.layers is None else self.layers[layer]

    def commit(self, layers: list[LayerState], new_tokens: int) -> None:
        """Install the state after a successful call of ``new_tokens`` positions."""
        self.layers = list(layers)
        self.seen_tokens += new_tokens

    def clear(self) -> None:
        self.layers, self.seen_tokens = None, 0

    def memory_usage(self) -> int:
        """Bytes held by the state tensors."""
        if self.layers is None:
            return 0
        return sum(t.numel() * t.element_size() for s in self.layers
                   for t in (s.att_x, s.wkv, s.ffn_x))

    def __repr__(self) -> str:
        return (f"RwkvState(layers={self._num_layers}, seen_tokens={self.seen_tokens}, "
                f"batch={self.batch_size()}, bytes={self.memory_usage()})")
