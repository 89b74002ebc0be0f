"""The contract between generic code and a model: :class:`MIBackend`.

Generic code (``MIModel``, generation, analyses, memory tools) uses nothing else. Optional
capabilities are separate protocols, checked with ``isinstance`` where they are needed:
:class:`BlockLoop` (the embed -> blocks -> head split that looped passes drive),
:class:`SupportsMemoryPlan` (an analytic memory estimate before a run) and
:class:`SupportsWeights` (TransformerLens-layout weight views).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..hooks.cache import HookCache
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec


@runtime_checkable
class MIBackend(Protocol):
    """What every model backend provides."""

    @property
    def num_layers(self) -> int: ...

    @property
    def hidden_size(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def num_heads(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def config(self) -> Any: ...

    def forward(self, input_ids: Any, hooks: HookSpec | None = None, *,
                attention_mask: torch.Tensor | None = None, state: Any = None,
                last_logits_only: bool = False, stop_at_layer: int | None = None) -> HookCache:
        """Logits in ``cache.output()``; with ``state`` (from ``make_state``) only the new
        positions are computed and the state is advanced.

        ``stop_at_layer=L`` (TransformerLens's convention: exclusive, negative counts from
        the end) runs layers 0..L-1 only and leaves the residual stream after layer L-1
        [B,S,D] in ``cache.output()``; hook points that would not fire raise HookError, and
        a ``state`` raises InputError (a partial pass would corrupt it). ``MIModel`` passes
        it only when set, so a backend without early exit need not accept it."""
        ...

    def make_state(self) -> Any:
        """A fresh incremental-decoding state (KV cache, recurrent state, ...)."""
        ...

    def project_to_vocab(self, hidden: torch.Tensor) -> torch.Tensor: ...

    def embedding_vector(self, token_id: int) -> torch.Tensor: ...

    def hook_points(self) -> dict[HookPoint, tuple]: ...


@runtime_checkable
class BlockLoop(Protocol):
    """A backend whose forward is ``begin`` -> blocks ``[start, end)`` -> ``finish``.

    ``begin`` validates the inputs and hooks, fires the embedding points and returns an
    opaque per-call context plus the first residual; ``run_blocks`` may be called on any
    range, any number of times; ``finish`` fires the final points and returns the cache."""

    def begin(self, input_ids: Any, hooks: HookSpec | None, *,
              attention_mask: torch.Tensor | None = None) -> tuple[Any, torch.Tensor]: ...

    def run_blocks(self, run: Any, h: torch.Tensor, start: int, end: int) -> torch.Tensor: ...

    def finish(self, run: Any, h: torch.Tensor) -> HookCache: ...


# TransformerLens's weight names a SupportsWeights backend serves (MIModel forwards them).
WEIGHT_NAMES = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_in", "W_gate",
                "W_out", "b_in", "b_gate", "b_out", "W_U", "b_U", "W_E")


@runtime_checkable
class SupportsWeights(Protocol):
    """A backend that exposes its weights in TransformerLens's layout (``W_Q``, ``W_K``,
    ... by name: see ``backends.transformer.weights_view``)."""

    @property
    def weights(self) -> Any: ...


@dataclass(frozen=True)
class LayerCost:
    """One layer's largest uncaptured working set and which attention core it uses."""

    layer: int
    explicit: bool
    working_set_bytes: int


class MemoryPlan(Protocol):
    """The analytic memory model of one forward (bytes)."""

    logits_bytes: int

    def layer_costs(self) -> list[LayerCost]: ...

    def forward_peak(self) -> tuple[int, str]: ...

    def captured_bytes(self) -> int: ...

    def point_bytes(self, point: HookPoint) -> int: ...


@runtime_checkable
class SupportsMemoryPlan(Protocol):
    """A backend that can predict the bytes a forward with a HookSpec will hold."""

    def memory_plan(self, spec: HookSpec, batch: int, seq_len: int) -> MemoryPlan: ...
