"""Load one model one way in a fresh process; print load seconds and peak RSS as JSON.

Usage: python -m benchmarks.workers.load_worker MODE PATH
MODE: ours-gguf | hf-gguf | ours-safetensors | hf-safetensors
"""

import json
import os
import sys
import time

import psutil
import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def rss() -> int:
    return psutil.Process().memory_info().rss


def reset_peak() -> None:
    """Reset the kernel's RSS high-water mark to the current RSS. Needed because a child
    inherits its parent's high-water mark across fork+exec (getrusage's ru_maxrss would
    report the benchmark harness's own peak)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def load(mode: str, path: str) -> None:
    if mode.startswith("ours"):
        import torch_mi

        torch_mi.MIModel.from_pretrained(path, device="cpu", dtype="float32")
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if mode == "hf-gguf":
        folder, name = os.path.dirname(path), os.path.basename(path)
        AutoTokenizer.from_pretrained(folder, gguf_file=name)
        AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    else:
        AutoTokenizer.from_pretrained(path)
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    if mode.startswith("ours"):
        import torch_mi  # noqa: F401  (imports are not part of the load time)
    else:
        import transformers  # noqa: F401
    reset_peak()
    baseline = rss()
    start = time.perf_counter()
    load(mode, path)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss": peak,
                      "baseline_rss": baseline, "peak_growth": peak - baseline}))


if __name__ == "__main__":
    main()
