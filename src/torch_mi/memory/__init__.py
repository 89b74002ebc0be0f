"""Memory: snapshots and reports (RAM via psutil, VRAM via torch.cuda / NVML), peak tracking
of a block of code, and an estimate of a forward's memory BEFORE running it."""

from .budget import available_bytes, require_fits
from .estimate import MemoryEstimate, estimate_memory, weight_bytes
from .report import MemoryReport
from .snapshot import MemorySnapshot, sync_and_trim_gpu
from .tracking import (
    MemoryTracker,
    fix_malloc_mmap_threshold,
    measure_forward,
    track_memory,
    trim_heap,
)

__all__ = [
    "MemoryEstimate",
    "MemoryReport",
    "MemorySnapshot",
    "MemoryTracker",
    "available_bytes",
    "estimate_memory",
    "fix_malloc_mmap_threshold",
    "measure_forward",
    "require_fits",
    "sync_and_trim_gpu",
    "track_memory",
    "trim_heap",
    "weight_bytes",
]
