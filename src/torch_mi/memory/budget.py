"""Refuse a forward whose estimate does not fit in the memory free right now.

A forward that cannot fit does not fail fast: on CPU it swaps or is killed by the OOM
killer minutes later, and ``torch-mi memory --seq-len 1000000`` never returned. The
estimate is analytic (microseconds), so it is compared with free memory before any tensor
is allocated.
"""

from __future__ import annotations

import psutil
import torch

from ..errors import MemoryReportError
from .estimate import MemoryEstimate
from .snapshot import MIB


def available_bytes(device: torch.device | str) -> int:
    """Free memory where the forward will allocate: VRAM on CUDA, else available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def require_fits(estimate: MemoryEstimate, device: torch.device | str, *,
                 hint: str = "") -> None:
    """MemoryReportError, with the estimate and the free memory, if the forward's estimate
    (captures + logits + transient; the weights are already loaded) exceeds free memory."""
    device = torch.device(device)
    need, free = estimate.forward_bytes, available_bytes(device)
    if need <= free:
        return
    where = "VRAM" if device.type == "cuda" else "RAM"
    raise MemoryReportError(
        f"a forward of batch {estimate.batch} x {estimate.seq_len} tokens needs about "
        f"{need / MIB:,.0f} MB (estimate: captures {estimate.captures_bytes / MIB:,.0f} MB, "
        f"logits {estimate.logits_bytes / MIB:,.0f} MB, transient "
        f"{estimate.transient_bytes / MIB:,.0f} MB) but only {free / MIB:,.0f} MB of {where} "
        f"is free on {device}; refusing to run it{hint}")
