"""Timing and process helpers shared by the scenarios."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
ROOT = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Timing:
    """Seconds per call: median, min, max over ``n`` timed calls (after warm-up)."""

    median: float
    min: float
    max: float
    n: int

    def ms(self) -> str:
        return f"{self.median * 1e3:.1f} ms (min {self.min * 1e3:.1f}, max {self.max * 1e3:.1f})"

    def to_dict(self) -> dict:
        return asdict(self)


def time_calls(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2
               ) -> dict[str, Timing]:
    """Time several callables interleaved (A B A B ...), so drift hits all of them alike.

    Each result is freed after its clock stops: a cache the caller keeps is part of the
    work, releasing it later is not."""
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(reps):
            for name, fn in fns.items():
                start = time.perf_counter()
                result = fn()
                samples[name].append(time.perf_counter() - start)
                del result
    return {name: Timing(statistics.median(s), min(s), max(s), len(s))
            for name, s in samples.items()}


def setup_threads() -> None:
    """Same intra-op thread count for every library in the process."""
    torch.set_num_threads(THREADS)


def machine() -> dict:
    """The machine and process settings a figure depends on (call after loading a model:
    torch-mi's malloc policy is applied then)."""
    from torch_mi.memory import allocator_policy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": THREADS,
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "malloc": allocator_policy()}


def run_worker(args: list[str], python: str | None = None, env: dict | None = None,
               timeout: int = 900) -> dict:
    """Run a worker script in a fresh process and parse the JSON it prints last."""
    full_env = {**os.environ, "BENCH_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_VERBOSITY": "error", **(env or {})}
    result = subprocess.run([python or sys.executable, *args], capture_output=True, text=True,
                            env=full_env, timeout=timeout, cwd=os.path.dirname(ROOT))
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
