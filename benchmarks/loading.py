"""Scenario 3: load time and peak RSS, each load in a fresh process."""

from __future__ import annotations

import statistics

from .common import run_worker

WORKER = ["-m", "benchmarks.workers.load_worker"]


def _median_runs(mode: str, path: str, runs: int) -> dict:
    results = [run_worker([*WORKER, mode, path]) for _ in range(runs)]
    seconds = [r["seconds"] for r in results]
    return {"seconds": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "runs": runs, "peak_rss": max(r["peak_rss"] for r in results),
            "peak_growth": max(r["peak_growth"] for r in results),
            "baseline_rss": min(r["baseline_rss"] for r in results)}


def load_benchmarks(gguf: str, hf_dir: str, fp32_bytes: int, runs: int = 3) -> dict:
    out = {}
    for label, (ours_mode, hf_mode, path) in {
            "gguf": ("ours-gguf", "hf-gguf", gguf),
            "safetensors": ("ours-safetensors", "hf-safetensors", hf_dir)}.items():
        ours, hf = _median_runs(ours_mode, path, runs), _median_runs(hf_mode, path, runs)
        out[label] = {"torch-mi": ours, "transformers": hf,
                      "time_ratio": ours["seconds"] / hf["seconds"],
                      "peak_growth_over_fp32_weights": ours["peak_growth"] / fp32_bytes,
                      "peak_rss_over_fp32_weights": ours["peak_rss"] / fp32_bytes}
    out["fp32_weight_bytes"] = fp32_bytes
    return out
