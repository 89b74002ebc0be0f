"""Peak memory of a block of code: RSS polled in a background thread (plus the kernel's exact
high-water mark where Linux lets us reset it) and torch's peak CUDA allocation.

Why poll: a forward's largest allocation often lives for a millisecond, so before/after
snapshots miss it. Why the allocator helpers: glibc keeps freed mid-size blocks in its heap,
so RSS only tracks tensor allocations once big blocks are always mmapped
(:func:`fix_malloc_mmap_threshold`, or ``MALLOC_MMAP_THRESHOLD_`` set before start-up).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

import torch

from ..errors import MemoryReportError
from ..model import LanguageModel
from .allocator import trim_heap
from .report import MemoryReport
from .snapshot import MemorySnapshot, as_device, process_rss_bytes, sync_and_trim_gpu

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def read_peak_rss() -> int | None:
    """The kernel's RSS high-water mark (VmHWM) in bytes, or None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RssPoller:
    """Background thread recording the highest RSS it sees every ``interval_s`` seconds."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="torch-mi-rss-poller", daemon=True)
        try:  # /proc/self/statm is read with one pread: ~10x cheaper than psutil
            self._fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = None

    def sample(self) -> int:
        if self._fd is None:
            return process_rss_bytes()
        return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE

    def _run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.sample())
            self.samples += 1
            self._done.wait(self.interval_s)

    def start(self) -> None:
        self.peak = self.sample()
        self._thread.start()

    def stop(self) -> int:
        """Stop polling; the peak including one last sample."""
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return self.peak


class MemoryTracker:
    """What :func:`track_memory` yields: ``before`` at once; ``after``, the peaks and
    ``report`` once the block has finished."""

    def __init__(self, device: str | torch.device | None, interval_s: float) -> None:
        if not interval_s > 0:
            raise MemoryReportError(f"interval_s must be > 0 seconds, got {interval_s}")
        self.device = as_device(device)
        self._poller = RssPoller(interval_s)
        self._report: MemoryReport | None = None
        self._hwm_reset = False
        self.before = MemorySnapshot.now(self.device)

    @property
    def _cuda(self) -> bool:
        return self.device is not None and self.device.type == "cuda" and torch.cuda.is_available()

    def start(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._hwm_reset = reset_peak_rss()
        self._poller.start()

    def stop(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        polled = self._poller.stop()
        kernel = read_peak_rss() if self._hwm_reset else None
        after = MemorySnapshot.now(self.device)
        peaks = [polled, self.before.ram_bytes, after.ram_bytes] + ([kernel] if kernel else [])
        gpu_peak = int(torch.cuda.max_memory_allocated(self.device)) if self._cuda else None
        method = f"RSS polled every {self._poller.interval_s * 1000:g} ms"
        if kernel is not None:
            method = "kernel VmHWM + " + method
        self._report = MemoryReport(self.before, after, max(peaks), gpu_peak, method)

    @property
    def report(self) -> MemoryReport:
        if self._report is None:
            raise MemoryReportError("the tracked block has not finished: read the report after "
                                    "the `with track_memory()` block")
        return self._report

    @property
    def after(self) -> MemorySnapshot:
        return self.report.after

    @property
    def peak_ram_bytes(self) -> int | None:
        return self.report.peak_ram_bytes

    @property
    def peak_gpu_allocated_bytes(self) -> int | None:
        return self.report.peak_gpu_allocated_bytes

    @property
    def samples(self) -> int:
        return self._poller.samples


@contextlib.contextmanager
def track_memory(device: str | torch.device | None = None,
                 interval_s: float = 0.001) -> Iterator[MemoryTracker]:
    """Measure a block: snapshots before/after, peak RSS and (CUDA) peak allocation::

        with track_memory() as mem:
            cache = model.forward(ids, spec)
        print(mem.report.format_peak("forward"))

    RSS is process-wide (other threads count too). On Linux the kernel's peak-RSS counter
    (VmHWM, also behind ``ru_maxrss``) is reset at the start, so the exact peak is read back.
    """
    tracker = MemoryTracker(device, interval_s)
    tracker.start()
    try:
        yield tracker
    finally:
        tracker.stop()


def measure_forward(model: LanguageModel, input_ids: torch.Tensor, hooks=None, *, warmup: bool = True,
                    **options) -> MemoryReport:
    """Run ``model.forward(input_ids, hooks)`` once under :func:`track_memory` (no autograd).

    ``warmup`` first runs the same input without hooks, so one-time allocations (thread
    pools, kernel workspaces sized on first use) are not charged to the measured call;
    garbage is collected and the heap/GPU cache trimmed before the baseline. The report's
    ``after`` snapshot is taken while the returned cache is still alive.
    """
    device = getattr(model, "device", None)
    if warmup:
        with torch.no_grad():
            model.forward(input_ids, None, **options)
    gc.collect()
    trim_heap()
    sync_and_trim_gpu(device)
    with torch.no_grad(), track_memory(device) as tracker:
        cache = model.forward(input_ids, hooks, **options)
        if tracker.device is not None and tracker.device.type == "cuda":
            torch.cuda.synchronize(tracker.device)
    del cache
    return tracker.report
