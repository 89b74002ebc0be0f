"""Early exit: ``forward(ids, stop_at_layer=L)`` (blocks 0..L-1, no final norm or
unembedding) against the full forward, no hooks, fp32.

Target (issue 11): stop_at_layer=15 on SmolLM2 (30 layers) is >= 1.8x faster than the full
forward. Also records that the early residual equals the full forward's
``blocks.{L-1}.hook_resid_post`` (a correctness check run once, outside the timings).
"""

from __future__ import annotations

import torch

from .common import time_calls
from .forward import _ids, _reps

STOP_AT_LAYER = 15
SEQ_LEN = 128


def early_exit(ours, seq_len: int = SEQ_LEN, quick: bool = False,
               stop_at_layer: int = STOP_AT_LAYER) -> dict:
    """Time the full forward and the early exit on the same ids."""
    from torch_mi import HookSpec

    stop = min(stop_at_layer, ours.num_layers - 1)  # tiny smoke models have 2 layers
    ids = _ids(seq_len, ours.vocab_size)
    resid = f"blocks.{stop - 1}.hook_resid_post"
    full = ours.forward(ids, HookSpec().capture(resid))[resid]
    same = bool(torch.equal(ours.forward(ids, stop_at_layer=stop).output(), full))
    t = time_calls({"full": lambda: ours.forward(ids),
                    "early": lambda: ours.forward(ids, stop_at_layer=stop)},
                   _reps(seq_len, quick))
    return {"seq_len": seq_len, "stop_at_layer": stop, "num_layers": ours.num_layers,
            **{k: v.to_dict() for k, v in t.items()},
            "speedup": t["full"].median / t["early"].median,
            "same_residual": same}
