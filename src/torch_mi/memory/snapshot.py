"""Point-in-time memory readings: process RSS, system RAM and (on CUDA/MPS) GPU memory.

GPU readings never raise: a value that cannot be read is ``None`` and ``vram_note`` says why,
so a report still prints on machines without NVML or with an unusual driver setup.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import psutil
import torch

from ..errors import MemoryReportError

MIB = 1024 * 1024  # "MB" in every report means MiB (bytes / 1 048 576)


def process_rss_bytes() -> int:
    """Resident set size of this process; MemoryReportError if the OS will not say."""
    try:
        return int(psutil.Process(os.getpid()).memory_info().rss)
    except (psutil.Error, OSError) as exc:
        raise MemoryReportError(f"cannot read this process's resident memory: {exc}") from exc


def as_device(device: str | torch.device | None) -> torch.device | None:
    """Normalise a device argument; 'cuda' becomes the current CUDA device."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MemoryReportError(f"unknown device {device!r}: use 'cpu', 'cuda[:N]' or 'mps'") from exc
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@dataclass(frozen=True)
class GpuReading:
    """What one look at a GPU returned (bytes; None = unavailable); copied into a snapshot."""

    vram_bytes: int | None = None  # headline: per-process (NVML) or device-wide used
    vram_per_process: bool | None = None
    vram_total_bytes: int | None = None
    allocated_bytes: int | None = None  # torch caching allocator: live tensors
    reserved_bytes: int | None = None  # torch caching allocator: held from the driver
    gpu_name: str | None = None
    note: str | None = None  # why a value is missing or where it came from


def _nvml_handle(pynvml, index: int):
    """NVML's handle for torch's CUDA ``index`` (UUIDs survive CUDA_VISIBLE_DEVICES remaps)."""
    try:
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except (RuntimeError, AssertionError):  # no usable CUDA runtime: NVML's own numbering
        uuid = None
    if uuid is not None:
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}".encode())
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def nvml_process_vram(index: int) -> tuple[int | None, str | None]:
    """(bytes this process holds on the GPU per NVML, None) or (None, reason)."""
    try:
        import pynvml
    except ImportError:
        return None, "per-process VRAM needs NVML: pip install nvidia-ml-py"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return None, f"NVML unavailable ({exc})"
    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(_nvml_handle(pynvml, index))
    except pynvml.NVMLError as exc:
        return None, f"NVML process query failed ({exc})"
    finally:
        pynvml.nvmlShutdown()
    pid = os.getpid()
    for proc in procs:
        if proc.pid == pid and proc.usedGpuMemory is not None:
            return int(proc.usedGpuMemory), None
    return None, f"pid {pid} not in NVML's process list (container PID namespace?)"


def cuda_reading(dev: torch.device) -> GpuReading:
    """torch allocator counters, device total and NVML per-process use for one CUDA device."""
    if not torch.cuda.is_available():
        return GpuReading(note="CUDA is not available in this process")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    try:
        free, total = torch.cuda.mem_get_info(index)
    except RuntimeError as exc:
        return GpuReading(note=f"CUDA memory query failed ({exc})")
    process, note = nvml_process_vram(index)
    per_process = process is not None
    return GpuReading(
        vram_bytes=process if per_process else int(total - free),
        vram_per_process=per_process,
        vram_total_bytes=int(total),
        allocated_bytes=int(torch.cuda.memory_allocated(index)),
        reserved_bytes=int(torch.cuda.memory_reserved(index)),
        gpu_name=torch.cuda.get_device_name(index),
        note=None if per_process else f"device-wide: {note}",
    )


def mps_reading() -> GpuReading:
    """Apple GPU: torch's own counters (per process; unified memory has no separate total)."""
    if not torch.backends.mps.is_available():
        return GpuReading(note="MPS is not available in this process")
    return GpuReading(
        vram_bytes=int(torch.mps.driver_allocated_memory()),
        vram_per_process=True,
        allocated_bytes=int(torch.mps.current_allocated_memory()),
        reserved_bytes=int(torch.mps.driver_allocated_memory()),
        gpu_name="Apple MPS",
    )


@dataclass(frozen=True)
class MemorySnapshot:
    """Memory of this process (and its GPU) at one moment. Byte counts; None = unavailable.

    ``vram_bytes`` is NVML's per-process figure when it can be read (``vram_per_process``
    True), else the device-wide used memory (False); ``gpu_allocated_bytes`` /
    ``gpu_reserved_bytes`` are torch's allocator counters; ``vram_note`` says why a
    per-process figure is missing.
    """

    ram_bytes: int
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    device: str = "cpu"
    vram_bytes: int | None = None
    vram_per_process: bool | None = None
    vram_total_bytes: int | None = None
    gpu_allocated_bytes: int | None = None
    gpu_reserved_bytes: int | None = None
    gpu_name: str | None = None
    vram_note: str | None = None

    @classmethod
    def now(cls, device: str | torch.device | None = None) -> MemorySnapshot:
        """Read RSS and system RAM; for a CUDA/MPS ``device`` also read GPU memory."""
        dev = as_device(device)
        try:
            system = psutil.virtual_memory()
            total, available = int(system.total), int(system.available)
        except (psutil.Error, OSError):
            total = available = None
        gpu = GpuReading()
        if dev is not None and dev.type == "cuda":
            gpu = cuda_reading(dev)
        elif dev is not None and dev.type == "mps":
            gpu = mps_reading()
        return cls(process_rss_bytes(), total, available, str(dev or "cpu"),
                   gpu.vram_bytes, gpu.vram_per_process, gpu.vram_total_bytes,
                   gpu.allocated_bytes, gpu.reserved_bytes, gpu.gpu_name, gpu.note)

    def ram_mb(self) -> float:
        """Process RSS in MB (MiB)."""
        return self.ram_bytes / MIB

    def vram_mb(self) -> float | None:
        """GPU memory in MB (MiB), or None without a GPU reading."""
        return None if self.vram_bytes is None else self.vram_bytes / MIB

    def to_dict(self) -> dict:
        return asdict(self)


def sync_and_trim_gpu(device: str | torch.device | None) -> None:
    """Finish queued GPU work and hand cached blocks back to the driver, so the next
    reading shows what tensors really hold (no-op on CPU)."""
    dev = as_device(device)
    if dev is None:
        return
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
    elif dev.type == "mps" and torch.backends.mps.is_available():
        torch.mps.synchronize()
        torch.mps.empty_cache()
