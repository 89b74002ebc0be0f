"""Memory: snapshots and reports (RAM via psutil, VRAM via torch.cuda / NVML), peak tracking
of a block of code, and an estimate of a forward's memory BEFORE running it."""

from .allocator import (
    allocator_policy,
    fix_malloc_mmap_threshold,
    keep_freed_memory,
    trim_heap,
)
from .budget import available_bytes, require_fits
from .estimate import MemoryEstimate, estimate_memory, weight_bytes
from .report import MemoryReport
from .snapshot import MemorySnapshot, sync_and_trim_gpu
from .tracking import MemoryTracker, measure_forward, track_memory

__all__ = [
    "MemoryEstimate",
    "MemoryReport",
    "MemorySnapshot",
    "MemoryTracker",
    "allocator_policy",
    "available_bytes",
    "estimate_memory",
    "fix_malloc_mmap_threshold",
    "keep_freed_memory",
    "measure_forward",
    "require_fits",
    "sync_and_trim_gpu",
    "track_memory",
    "trim_heap",
    "weight_bytes",
]
