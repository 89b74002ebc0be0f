"""``stop_at_layer``: TransformerLens's early exit, one set of rules for every backend.

Exclusive (blocks 0..L-1 run; ``cache.output()`` is the residual after block L-1, no final
norm, no unembedding), negative values count from the end. A ``state`` is refused (the
later layers would not advance it: a KV cache without their keys, an RWKV state behind the
tokens it has seen), as is ``last_logits_only`` (there are no logits), and hook points that
would never fire raise HookError before any work.
"""

from __future__ import annotations

from typing import Any

from ..errors import HookError, InputError
from ..hooks.points import HookPoint
from ..hooks.spec import HookSpec


def blocks_to_run(stop_at_layer: Any, n_layers: int, hooks: HookSpec | None, state: Any,
                  last_logits_only: bool, points: dict[HookPoint, tuple],
                  embed: HookPoint) -> int:
    """How many blocks run (``n_layers`` when ``stop_at_layer`` is None). ``points``: the
    backend's hook points; ``embed``: the one point that fires before block 0."""
    n = n_layers
    if stop_at_layer is None:
        return n
    if isinstance(stop_at_layer, bool) or not isinstance(stop_at_layer, int) \
            or not -n <= stop_at_layer <= n:
        raise InputError(f"stop_at_layer must be an int in {-n}..{n} (blocks 0..L-1 run; "
                         f"negative counts from the end), got {stop_at_layer!r}")
    if state is not None:
        raise InputError("stop_at_layer cannot be combined with state: a partial pass would "
                         "leave the later layers' state behind; run the full forward to "
                         "advance a state")
    if last_logits_only:
        raise InputError("stop_at_layer returns the residual stream, not logits; drop "
                         "last_logits_only")
    end = n + stop_at_layer if stop_at_layer < 0 else stop_at_layer
    if isinstance(hooks, HookSpec):
        late = sorted({str(p) for p in hooks.points() if p in points and (
            (p.layer is None and p != embed) or (p.layer is not None and p.layer >= end))})
        if late:
            ran = f"blocks 0..{end - 1}" if end else "the embedding"
            raise HookError(f"stop_at_layer={stop_at_layer} runs {ran} only; these hook "
                            f"points would never fire: {', '.join(late)}. Drop them or raise "
                            f"stop_at_layer")
    return end
