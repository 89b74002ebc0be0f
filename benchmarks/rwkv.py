"""Scenario ``rwkv``: torch-mi's RWKV-6 / RWKV-7 against the ``rwkv`` package (issue 12).

A random checkpoint of realistic shape (D=768, 12 layers, head size 64, vocabulary 65536;
``rwkv_models.py``) per version, both libraries in one worker process with the same threads,
fp32 CPU (``workers/rwkv_worker.py``; one process per version because the package chooses
RWKV-7 at import time from ``RWKV_V7_ON``). Targets: a 512-token prompt >= 2x faster than the
package's sequence mode; greedy generation tokens/s >= 1.0x the package; capture of every hook
point <= 1.2x our no-hook forward.
"""

from __future__ import annotations

from .common import run_worker

VERSIONS = ("v6", "v7")


def rwkv_benchmarks(quick: bool = False) -> dict:
    """{version: figures}; a version whose worker failed is recorded under ``errors`` so the
    other's figures survive."""
    out: dict = {"errors": {}}
    for version in VERSIONS:
        env = {"RWKV_V7_ON": "1" if version == "v7" else "0", "RWKV_JIT_ON": "1",
               "RWKV_CUDA_ON": "0", "CUDA_VISIBLE_DEVICES": ""}
        try:
            out[version] = run_worker(["-m", "benchmarks.workers.rwkv_worker", version,
                                       "quick" if quick else "full"], env=env)
        except Exception as exc:  # recorded and reported, not swallowed
            out["errors"][version] = f"{type(exc).__name__}: {exc}"[-2000:]
            print(f"rwkv {version} failed: {out['errors'][version]}")
    return out


def target_rows(r: dict) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, target, met) rows of the rwkv scenario for report.py."""
    rows = []
    for version in VERSIONS:
        f = r.get(version)
        if f is None:
            continue
        name = {"v6": "RWKV-6", "v7": "RWKV-7"}[version]
        p, g, c = f["prompt"], f["generation"], f["capture"]
        rows += [
            (f"{name} prompt {p['tokens']} tok: rwkv package seq mode / torch-mi",
             f"{p['speedup']:.2f}x", ">= 2x", p["speedup"] >= 2),
            ("  same, torch-mi recurrence / chunked WKV", f"{p['chunked_speedup']:.2f}x",
             "(context)", None),
            ("  same, bound: package / the model's projections alone (fp32 GEMMs)",
             f"{p['speedup_bound']:.2f}x", "(context)", None),
            (f"{name} greedy generation tok/s / rwkv package", f"{g['ratio']:.2f}x", ">= 1.0x",
             g["ratio"] >= 1.0),
            (f"{name} capture all {c['points']} points / no hooks ({c['seq_len']} tok)",
             f"{c['ratio']:.2f}x", "<= 1.2x", c["ratio"] <= 1.2),
            ("  same, without effective attention", f"{c['ratio_without_effective_attn']:.2f}x",
             "(context)", None)]
    return rows


def markdown(r: dict) -> list[str]:
    """The docs section: one row per version."""
    lines = ["", "## RWKV vs the rwkv package (random checkpoint, one process per version)", "",
             "| version | shape | prompt: package / torch-mi ms | recurrence ms | projections "
             "alone ms | generation tok/s torch-mi / package | capture-all / no hooks ms | "
             "max abs logit diff | same tokens |", "|---|---|---|---|---|---|---|---|---|"]
    for version in VERSIONS:
        f = r.get(version)
        if f is None:
            continue
        s, p, g, c = f["shape"], f["prompt"], f["generation"], f["capture"]
        lines.append(
            f"| {version} | D={s['hidden']} L={s['layers']} head {s['head_size']} "
            f"V={s['vocab']}, {p['tokens']} tok | {p['package']['median'] * 1e3:.1f} / "
            f"{p['torch-mi']['median'] * 1e3:.1f} | {p['torch-mi recurrent']['median'] * 1e3:.1f}"
            f" | {p['projections only']['median'] * 1e3:.1f}"
            f" | {g['torch-mi_tok_s']:.1f} / {g['package_tok_s']:.1f} | "
            f"{c['capture-all']['median'] * 1e3:.1f} / {c['no-hooks']['median'] * 1e3:.1f} | "
            f"{p['max_abs_logit_diff']:.1e} | {g['same_tokens']} |")
    lines.append("\n'Projections alone' runs only the model's Linear layers (every projection, "
                 "the channel mix, the head on one row) with the prompt's shapes: fp32 GEMM "
                 "work any implementation of this forward does. Package / that time bounds "
                 "the prompt speedup reachable with this machine's fp32 GEMM (target rows, "
                 "'bound').")
    for version, error in r.get("errors", {}).items():
        lines.append(f"\nRWKV {version} failed in this run: `{error.splitlines()[-1]}`")
    return lines
