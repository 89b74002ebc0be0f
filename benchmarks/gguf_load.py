"""GGUF load benchmark: torch-mi vs transformers, model + tokenizer, SmolLM2 by default.

Each measurement runs in a fresh subprocess, so ``ru_maxrss`` (peak RSS) belongs to one
loader and one load; growth is measured over the baseline taken after the loader's
library is imported. Wall time is the median of ``--runs`` loads.

    python benchmarks/gguf_load.py [--model FILE.gguf] [--runs 3] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gguf_load.json"
LOADERS = ("torch-mi", "transformers")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _child_torch_mi(path: Path) -> dict:
    import torch

    import torch_mi as mi

    baseline = _peak_rss_bytes()
    start = time.perf_counter()
    model = mi.MIModel.from_pretrained(path, device="cpu", dtype=torch.float32)
    seconds = time.perf_counter() - start
    params = {id(p): p.numel() for p in model.backend.parameters()}  # tied weights once
    return {"seconds": seconds, "baseline": baseline, "peak": _peak_rss_bytes(),
            "parameters": sum(params.values())}


def _child_transformers(path: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    baseline = _peak_rss_bytes()
    start = time.perf_counter()
    AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=torch.float32)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "baseline": baseline, "peak": _peak_rss_bytes(),
            "parameters": model.num_parameters()}


def run_child(loader: str, path: Path) -> dict:
    """One load in a fresh interpreter; returns its JSON record."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run([sys.executable, __file__, "--child", loader, "--model", str(path)],
                            capture_output=True, text=True, env=env, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"{loader} load failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(records: list[dict]) -> dict:
    seconds = [r["seconds"] for r in records]
    return {"seconds_median": statistics.median(seconds), "seconds_min": min(seconds),
            "seconds_max": max(seconds), "seconds_all": seconds,
            "peak_rss_bytes": max(r["peak"] for r in records),
            "baseline_rss_bytes": min(r["baseline"] for r in records),
            "peak_growth_bytes": max(r["peak"] - r["baseline"] for r in records),
            "parameters": records[0]["parameters"]}


def measure(path: Path, runs: int) -> dict:
    """Interleave the loaders (A B A B ...) so machine load drifts hit both alike."""
    records: dict[str, list[dict]] = {name: [] for name in LOADERS}
    for i in range(runs):
        for name in LOADERS:
            records[name].append(run_child(name, path))
            print(f"  run {i + 1}/{runs} {name}: {records[name][-1]['seconds']:.2f} s",
                  flush=True)
    results = {name: summarise(recs) for name, recs in records.items()}
    ours, theirs = results["torch-mi"], results["transformers"]
    fp32 = ours["parameters"] * 4
    return {
        "model": str(path), "file_bytes": path.stat().st_size, "runs": runs,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "fp32_weight_bytes": fp32, "loaders": results,
        "time_ratio": ours["seconds_median"] / theirs["seconds_median"],
        "peak_growth_over_fp32_weights": ours["peak_growth_bytes"] / fp32,
        "transformers_peak_growth_over_fp32_weights": theirs["peak_growth_bytes"] / fp32,
    }


def print_table(report: dict) -> None:
    mib = 2 ** 20
    print(f"\nGGUF load: {Path(report['model']).name} ({report['file_bytes'] / mib:.0f} MiB), "
          f"fp32 weights {report['fp32_weight_bytes'] / mib:.0f} MiB, {report['runs']} runs each")
    print(f"{'loader':<14}{'median s':>10}{'min s':>8}{'max s':>8}{'peak MiB':>10}"
          f"{'growth MiB':>12}{'growth/fp32':>13}")
    for name, r in report["loaders"].items():
        print(f"{name:<14}{r['seconds_median']:>10.2f}{r['seconds_min']:>8.2f}"
              f"{r['seconds_max']:>8.2f}{r['peak_rss_bytes'] / mib:>10.0f}"
              f"{r['peak_growth_bytes'] / mib:>12.0f}"
              f"{r['peak_growth_bytes'] / report['fp32_weight_bytes']:>13.2f}")
    print(f"time ratio torch-mi / transformers: {report['time_ratio']:.3f}")


def default_model() -> Path:
    from torch_mi.loading.embedded import default_model_path

    return default_model_path()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", choices=LOADERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    path = (args.model or default_model()).resolve()
    if args.child:
        child = _child_torch_mi if args.child == "torch-mi" else _child_transformers
        print(json.dumps(child(path)))
        return
    report = measure(path, args.runs)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
