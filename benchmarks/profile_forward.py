"""CPU profile (torch.profiler) of one forward at 128 tokens, torch-mi vs transformers sdpa,
on the same SmolLM2 weights: where the time goes, operator by operator.

Usage: python -m benchmarks.profile_forward [--tokens 128] [--reps 5] [--rows 12]
       [--out docs/profile.md]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from .common import setup_threads


def profile_table(fn, reps: int, rows: int) -> tuple[str, float]:
    with torch.inference_mode():
        for _ in range(3):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                fn()
    averages = prof.key_averages()
    total_ms = sum(e.self_cpu_time_total for e in averages) / 1e3 / reps
    return averages.table(sort_by="self_cpu_time_total", row_limit=rows), total_ms


def main(argv=None) -> int:
    from transformers import AutoModelForCausalLM

    import torch_mi

    from .assets import gguf_path, hf_copy

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--out", default=None, help="also write the tables as markdown here")
    args = parser.parse_args(argv)
    setup_threads()
    ours = torch_mi.MIModel.from_pretrained(gguf_path(), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(hf_copy(), dtype=torch.float32,
                                              attn_implementation="sdpa").eval()
    ids = torch.randint(100, 30000, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    sections = []
    for name, fn in (("torch-mi", lambda: ours.forward(ids)), ("transformers sdpa", lambda: hf(ids))):
        table, total = profile_table(fn, args.reps, args.rows)
        heading = f"{name}: {total:.1f} ms self CPU per forward ({args.tokens} tokens)"
        print(f"===== {heading}")
        print(table)
        sections.append(f"### {heading}\n\n```\n{table}\n```\n")
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(
            "# CPU profile of one forward (torch.profiler)\n\n"
            f"SmolLM2-135M-Instruct, fp32, {args.tokens} tokens, batch 1, averaged over "
            f"{args.reps} forwards. Reproduce: `python -m benchmarks.profile_forward "
            f"--out docs/profile.md`.\n\n" + "\n".join(sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
