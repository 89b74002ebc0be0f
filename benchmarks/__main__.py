"""``python -m benchmarks``: run the scenarios, print a table, write JSON and the docs page.

Targets (SPEC §11): forward 128 tokens <= 0.9x HF sdpa; capture-all <= 1.15x our no-hook
forward and >= 2x faster than TransformerLens run_with_cache; GGUF load <= 0.25x HF;
safetensors load <= 0.5x HF; peak RSS during load <= 1.3x fp32 weights; generation >= 1.0x;
stop_at_layer=15 forward >= 1.8x faster than the full forward (issue 11); RWKV (issue 12,
random D=768 checkpoints vs the ``rwkv`` package): 512-token prompt >= 2x faster, generation
>= 1.0x, capture-all <= 1.2x our no-hook forward. SAE splice (issue 13: 16x-wide SAE at a
middle layer, error term, 128 tokens) <= 1.3x the plain forward. CLT load (issue 13, context
only): lazy encode of all layers vs circuit-tracer's loader, time and peak RSS side by side.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .common import ROOT, machine, run_worker, setup_threads

SCENARIOS = ("forward", "capture", "scaling", "generation", "loading", "transformerlens",
             "early_exit", "rwkv", "sae_splice", "clt_load", "attribution", "harvest")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of {SCENARIOS}")
    p.add_argument("--model-dir", default=None,
                   help="use this HF folder for both libraries instead of the SmolLM2 GGUF "
                        "(smoke tests)")
    p.add_argument("--quick", action="store_true", help="few repetitions, short sequences")
    p.add_argument("--out", default=str(Path(ROOT) / "results" / "latest.json"))
    p.add_argument("--docs", default=str(Path(ROOT).parent / "docs" / "benchmarks.md"),
                   help="markdown page to rewrite ('' to skip)")
    return p.parse_args(argv)


def load_models(model_dir: str | None):
    from transformers import AutoModelForCausalLM

    import torch_mi

    from .assets import gguf_path, hf_copy

    if model_dir:
        ours = torch_mi.MIModel.from_pretrained(model_dir, device="cpu")
        hf_dir = Path(model_dir)
    else:
        ours = torch_mi.MIModel.from_pretrained(gguf_path(), device="cpu")
        hf_dir = hf_copy()
    hf = {impl: AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32,
                                                     attn_implementation=impl).eval()
          for impl in ("sdpa", "eager")}
    return ours, hf, hf_dir


def run(args: argparse.Namespace) -> dict:
    from . import (
        clt_load,
        early_exit,
        forward,
        generation,
        harvest,
        loading,
        rwkv,
        sae_splice,
        transformerlens,
    )
    from .attribution import attribution

    setup_threads()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    # the rwkv and clt_load scenarios build their own files in worker processes
    needs_smollm = any(name not in ("rwkv", "clt_load", "attribution") for name in chosen)
    ours, hf, hf_dir = load_models(args.model_dir) if needs_smollm else (None, None, None)
    seq_lens = (8, 32) if args.quick else forward.SEQ_LENS
    capture_len = 32 if args.quick else 128
    results: dict = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "model": str(args.model_dir or "SmolLM2-135M-Instruct (embedded GGUF)"),
                     "dtype": "float32", "errors": {}}

    def tl_scenario() -> dict:
        tl = transformerlens.run_with_cache(hf_dir, capture_len, 2 if args.quick else 10)
        tl["speedup_of_torch_mi_capture_all"] = (tl["run_with_cache"]["median"]
                                                 / tl["torch-mi capture-all"]["median"])
        return tl

    def capture_scenario() -> dict:
        from .assets import gguf_path

        figures = forward.capture_all(ours, capture_len, args.quick)
        # The same in a fresh process on glibc's default malloc settings (see
        # torch_mi.memory.allocator): what the policy is worth, reported next to it.
        figures["glibc_defaults"] = run_worker(
            ["-m", "benchmarks.workers.capture_worker", str(args.model_dir or gguf_path()),
             str(capture_len), "quick" if args.quick else "full"],
            env={"TORCH_MI_KEEP_FREED_MEMORY": "0"})
        return figures

    def loading_scenario() -> dict:
        from .assets import gguf_path

        fp32 = sum(p.numel() for p in ours.backend.parameters()) * 4
        return loading.load_benchmarks(str(gguf_path()), str(hf_dir), fp32,
                                       1 if args.quick else 3)

    scenarios = {
        "forward": lambda: forward.forward_no_hooks(ours, hf["sdpa"], hf["eager"], seq_lens,
                                                    args.quick),
        "capture": capture_scenario,
        "scaling": lambda: forward.hook_scaling(ours, seq_lens, args.quick),
        "generation": lambda: generation.greedy_generation(
            ours, hf["sdpa"], ours.tokenizer, 8 if args.quick else 64, 1 if args.quick else 3),
        "transformerlens": tl_scenario,
        "loading": loading_scenario,
        "early_exit": lambda: early_exit.early_exit(ours, capture_len, args.quick),
        "rwkv": lambda: rwkv.rwkv_benchmarks(args.quick),
        "sae_splice": lambda: sae_splice.sae_splice(ours, capture_len, args.quick),
        "clt_load": lambda: clt_load.clt_load(args.quick),
        "attribution": lambda: attribution(args.quick),
        "harvest": lambda: harvest.scenario(ours, args.model_dir, args.quick),
    }
    for name, scenario in scenarios.items():
        if name not in chosen or (name == "loading" and args.model_dir):
            continue
        try:  # one failing scenario must not lose the others' figures
            results[name] = scenario()
        except Exception as exc:  # recorded and reported, not swallowed
            results["errors"][name] = f"{type(exc).__name__}: {exc}"[-2000:]
            print(f"scenario {name} failed: {results['errors'][name]}")
    return results


def main(argv=None) -> int:
    from .report import render_table, write_markdown

    args = parse_args(argv)
    results = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    render_table(results)
    if args.docs:
        write_markdown(results, Path(args.docs), " ".join(["python -m benchmarks",
                                                           *(["--quick"] if args.quick else [])]))
    print(f"JSON written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
