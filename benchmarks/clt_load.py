"""Lazy CLT encode of all layers: torch-mi vs circuit-tracer's loader on the same files
(issue 13), time and peak RSS side by side, one fresh process per measurement.

The files are a random JumpReLU CLT in circuit-tracer's layout (``W_enc_{l}.safetensors``
with W_enc_l [F,D], b_enc_l, b_dec_l, threshold_l; ``W_dec_{l}.safetensors`` with W_dec_l
[F, L-l, D]), written to a temporary folder with plain safetensors. Full size: 12 layers,
d_model 768, 4096 features per layer, fp32 = 151 MB of encoders + 981 MB of decoders
(~1.1 GB on disk; a realistic 8192-feature CLT would be ~2.3 GB, too slow to write and
read on every run). Each worker opens the folder and encodes a [1, 128, d_model] input at
every layer (the same inputs for every library), keeping only a per-layer sum and nonzero
count, which the report compares across libraries.

circuit-tracer 0.5.0 pins transformers<=4.57.3, so it runs in its own venv
(``BENCH_CT_VENV``, default benchmarks/.venv-ct, created on first use); when that venv
cannot be built, its rows are skipped with the reason recorded.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .common import ROOT, run_worker

CT_VENV = Path(os.environ.get("BENCH_CT_VENV", str(Path(ROOT) / ".venv-ct")))
CT_VERSION = "circuit-tracer==0.5.0"
FULL = {"layers": 12, "d_model": 768, "features": 4096, "seq_len": 128}
QUICK = {"layers": 4, "d_model": 64, "features": 512, "seq_len": 128}
CT_MODES = ("ct-lazy", "ct-default", "ct-eager")


def write_clt(root: Path, layers: int, d_model: int, features: int, seed: int = 0) -> int:
    """Random JumpReLU CLT in circuit-tracer's layout, one layer at a time; returns bytes."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for layer in range(layers):
        enc = {f"W_enc_{layer}": torch.randn(features, d_model, generator=gen) * d_model ** -0.5,
               f"b_enc_{layer}": torch.randn(features, generator=gen) * 0.1,
               f"b_dec_{layer}": torch.randn(d_model, generator=gen) * 0.01,
               f"threshold_{layer}": torch.rand(features, generator=gen) * 0.5}
        save_file(enc, str(root / f"W_enc_{layer}.safetensors"))
        del enc
        w_dec = torch.randn(features, layers - layer, d_model, generator=gen) * 0.05
        save_file({f"W_dec_{layer}": w_dec}, str(root / f"W_dec_{layer}.safetensors"))
        del w_dec
    (root / "config.yaml").write_text(
        'model_name: "random/clt"\nmodel_kind: cross_layer_transcoder\n'
        'feature_input_hook: "hook_resid_mid"\nfeature_output_hook: "hook_mlp_out"\n')
    return sum(p.stat().st_size for p in root.iterdir())


def ensure_ct_venv() -> Path:
    """circuit-tracer in its own venv (CPU torch first, as everywhere); raises if it fails."""
    python = CT_VENV / "bin" / "python"
    if not python.exists():
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([sys.executable, "-m", "venv", str(CT_VENV)], check=True)
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run([*pip, CT_VERSION], check=True)
    check = subprocess.run([str(python), "-c", "import circuit_tracer"], capture_output=True,
                           text=True)
    if check.returncode != 0:
        raise RuntimeError(f"circuit-tracer does not import in {CT_VENV}: "
                           f"{check.stderr.strip()[-500:]}")
    return python


def _median_run(mode: str, clt_dir: Path, input_file: Path, reps: int,
                python: str | None = None) -> dict:
    """Median of ``reps`` fresh processes (by seconds; peak growth is the max seen)."""
    runs = [run_worker(["-m", "benchmarks.workers.clt_worker", mode, str(clt_dir),
                        str(input_file)], python=python, timeout=1800) for _ in range(reps)]
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**best, "seconds_all": [r["seconds"] for r in runs],
            "seconds": statistics.median(r["seconds"] for r in runs),
            "peak_growth": max(r["peak_growth"] for r in runs)}


def _max_rel_diff(a: list, b: list) -> float:
    """Largest relative difference of the per-layer (sum, nonzeros) summaries."""
    return max(abs(x - y) / max(abs(x), abs(y), 1.0)
               for la, lb in zip(a, b, strict=True) for x, y in zip(la, lb, strict=True))


def clt_load(quick: bool = False) -> dict:
    """Write the files, run each loader in fresh processes, and compare."""
    size = QUICK if quick else FULL
    reps = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="clt_bench_") as tmp:
        clt_dir, input_file = Path(tmp) / "clt", Path(tmp) / "input.safetensors"
        nbytes = write_clt(clt_dir, size["layers"], size["d_model"], size["features"])
        from safetensors.torch import save_file

        gen = torch.Generator().manual_seed(1)
        save_file({"x": torch.randn(size["layers"], 1, size["seq_len"], size["d_model"],
                                    generator=gen)}, str(input_file))  # [L,1,S,D]
        out: dict = {**size, "file_bytes": nbytes,
                     "encoder_bytes": size["features"] * (size["d_model"] + 2) * 4,
                     "reps": reps, "torch-mi": _median_run("ours-lazy", clt_dir, input_file, reps)}
        try:
            python = str(ensure_ct_venv())
        except Exception as exc:  # recorded, and the torch-mi figures still stand
            out["circuit-tracer"] = {"skipped": f"{type(exc).__name__}: {exc}"[-1000:]}
            return out
        ours = out["torch-mi"]
        out["circuit-tracer"] = {}
        for mode in CT_MODES:
            ct = _median_run(mode, clt_dir, input_file, reps, python)
            ct["max_rel_diff_vs_torch_mi"] = _max_rel_diff(ours["summary"], ct["summary"])
            out["circuit-tracer"][mode] = ct
    return out


def target_rows(c: dict) -> list[tuple[str, str, str, bool | None]]:
    """Context rows (the issue sets no target beyond side by side)."""
    ours = c["torch-mi"]
    shape = f"{c['layers']}x{c['features']}x{c['d_model']}, {c['file_bytes'] / 2**20:.0f} MiB"
    rows = [(f"CLT encode all layers ({shape}): torch-mi lazy",
             f"{ours['seconds']:.2f} s, peak +{ours['peak_growth'] / 2**20:.0f} MiB",
             "(context)", None)]
    ct = c.get("circuit-tracer", {})
    if "skipped" in ct:
        return [*rows, ("  circuit-tracer", "skipped", "(context)", None)]
    for mode, r in ct.items():
        rows.append((f"  circuit-tracer {mode}",
                     f"{r['seconds']:.2f} s, peak +{r['peak_growth'] / 2**20:.0f} MiB "
                     f"(torch-mi {ours['seconds'] / r['seconds']:.2f}x time)", "(context)", None))
    return rows


def markdown(c: dict) -> list[str]:
    lines = ["", "## CLT: encode all layers, torch-mi vs circuit-tracer (issue 13)", "",
             f"Random JumpReLU CLT in circuit-tracer's layout: {c['layers']} layers, d_model "
             f"{c['d_model']}, {c['features']} features per layer, fp32, "
             f"{c['file_bytes'] / 2**20:.0f} MiB on disk (one layer's encoder "
             f"{c['encoder_bytes'] / 2**20:.1f} MiB). Each process opens the folder and "
             f"encodes a [1, {c['seq_len']}, {c['d_model']}] input at every layer; median of "
             f"{c['reps']} fresh processes, peak RSS growth is the largest seen.", "",
             "| loader | open s | encode s | total s | peak RSS growth | max rel. diff |",
             "|---|---|---|---|---|---|"]
    entries = [("torch-mi (lazy)", c["torch-mi"], None)]
    ct = c.get("circuit-tracer", {})
    entries += [(f"circuit-tracer {m}", r, r["max_rel_diff_vs_torch_mi"])
                for m, r in ct.items() if m != "skipped"]
    lines += [f"| {name} | {r['open_s']:.2f} | {r['encode_s']:.2f} | {r['seconds']:.2f} | "
              f"{r['peak_growth'] / 2**20:.0f} MiB | {'-' if d is None else f'{d:.1e}'} |"
              for name, r, d in entries]
    if "skipped" in ct:
        lines.append(f"\ncircuit-tracer skipped: `{ct['skipped']}`")
    lines.append("\nct-lazy: `load_clt(lazy_encoder=True)`; ct-default: its defaults (encoders "
                 "loaded, decoders lazy); ct-eager: `lazy_decoder=False` too.")
    return lines
