"""Before/after memory comparison (and the peak in between, when it was tracked)."""

from __future__ import annotations

from dataclasses import dataclass

from .snapshot import MIB, MemorySnapshot


def signed_mb(value: float) -> str:
    """'+12 MB' / '-3 MB' (whole MiB; fractions below 10 MiB keep one decimal)."""
    shown = f"{value:+.1f}" if abs(value) < 10 else f"{value:+.0f}"
    return f"{shown} MB"


def vram_scope(snapshot: MemorySnapshot) -> str:
    return "per-process" if snapshot.vram_per_process else "device-wide"


@dataclass(frozen=True)
class MemoryReport:
    """Two snapshots (and optionally the peak between them) with deltas in MB (MiB).

    ``peak_ram_bytes`` is the highest process RSS seen between the snapshots and
    ``peak_gpu_allocated_bytes`` torch's peak allocated GPU memory; both are filled by
    :func:`track_memory` and are None for a plain before/after pair.
    """

    before: MemorySnapshot
    after: MemorySnapshot
    peak_ram_bytes: int | None = None
    peak_gpu_allocated_bytes: int | None = None
    peak_method: str | None = None  # how the RAM peak was observed

    def ram_delta_mb(self) -> float:
        return (self.after.ram_bytes - self.before.ram_bytes) / MIB

    def vram_delta_mb(self) -> float | None:
        """None unless both snapshots have a VRAM reading."""
        if self.before.vram_bytes is None or self.after.vram_bytes is None:
            return None
        return (self.after.vram_bytes - self.before.vram_bytes) / MIB

    def peak_ram_growth_bytes(self) -> int | None:
        """Highest RSS during the tracked block minus the RSS before it."""
        if self.peak_ram_bytes is None:
            return None
        return self.peak_ram_bytes - self.before.ram_bytes

    def peak_gpu_growth_bytes(self) -> int | None:
        """Peak torch-allocated GPU memory during the block minus the allocation before it."""
        if self.peak_gpu_allocated_bytes is None or self.before.gpu_allocated_bytes is None:
            return None
        return self.peak_gpu_allocated_bytes - self.before.gpu_allocated_bytes

    def peak_ram_delta_mb(self) -> float | None:
        growth = self.peak_ram_growth_bytes()
        return None if growth is None else growth / MIB

    def peak_gpu_delta_mb(self) -> float | None:
        growth = self.peak_gpu_growth_bytes()
        return None if growth is None else growth / MIB

    # ---- text -------------------------------------------------------------------------------
    def format_delta(self, label: str) -> str:
        """``label: RAM +N MB | VRAM +M MB [per-process|device-wide]`` (VRAM part only
        when both snapshots have it)."""
        text = f"{label}: RAM {signed_mb(self.ram_delta_mb())}"
        vram = self.vram_delta_mb()
        if vram is not None:
            text += f" | VRAM {signed_mb(vram)} [{vram_scope(self.after)}]"
        return text

    def format_before_after(self, label: str) -> str:
        """Two lines with the totals before and after (and the GPU name, if any)."""
        return f"{label} before: {_totals(self.before)}\n{label} after:  {_totals(self.after)}"

    def format_peak(self, label: str) -> str:
        """``label: peak RAM +N MB | peak GPU allocated +M MB`` over the before snapshot."""
        ram = self.peak_ram_delta_mb()
        text = f"{label}: peak RAM {'n/a' if ram is None else signed_mb(ram)}"
        gpu = self.peak_gpu_delta_mb()
        if gpu is not None:
            text += f" | peak GPU allocated {signed_mb(gpu)}"
        return text

    def print_delta(self, label: str) -> None:
        print(self.format_delta(label))

    def print_before_after(self, label: str) -> None:
        print(self.format_before_after(label))

    def to_dict(self) -> dict:
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "ram_delta_mb": self.ram_delta_mb(),
            "vram_delta_mb": self.vram_delta_mb(),
            "peak_ram_bytes": self.peak_ram_bytes,
            "peak_ram_delta_mb": self.peak_ram_delta_mb(),
            "peak_gpu_allocated_bytes": self.peak_gpu_allocated_bytes,
            "peak_gpu_delta_mb": self.peak_gpu_delta_mb(),
            "peak_method": self.peak_method,
        }


def _totals(snapshot: MemorySnapshot) -> str:
    text = f"RAM {snapshot.ram_mb():.0f} MB"
    if snapshot.ram_available_bytes is not None:
        text += f" (system {snapshot.ram_available_bytes / MIB:.0f} MB free"
        text += f" of {snapshot.ram_total_bytes / MIB:.0f} MB)" if snapshot.ram_total_bytes else ")"
    vram = snapshot.vram_mb()
    if vram is not None:
        text += f" | VRAM {vram:.0f} MB [{vram_scope(snapshot)}]"
        if snapshot.vram_total_bytes:
            text += f" of {snapshot.vram_total_bytes / MIB:.0f} MB"
        if snapshot.gpu_name:
            text += f" on {snapshot.gpu_name}"
    return text
