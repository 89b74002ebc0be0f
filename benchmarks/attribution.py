"""Attribution graphs: torch-mi vs circuit-tracer's ``attribute()`` on the same model,
transcoders and token ids (issue 14), one fresh process per run.

Full size: SmolLM2-135M-Instruct, the embedded GGUF dequantised to an fp32 HF folder
(benchmarks/.cache/smollm2-hf-f32, made by transformers; both libraries load that folder),
with random per-layer JumpReLU transcoders of 4096 features per layer at every layer
(``ln2.hook_normalized`` -> ``hook_mlp_out``, circuit-tracer's ``layer_{l}.safetensors``
format, one set of files read by both), prompts of 8 and 32 tokens, ``max_feature_nodes``
2000. Reported per prompt: load and ``attribute()`` seconds, peak RSS growth, the time and
RSS ratios torch-mi / circuit-tracer, and the largest adjacency difference relative to the
largest circuit-tracer entry (with whether both selected the same features).

``--quick`` runs the same pipeline on the tiny random Llama of
tests/golden/circuit_tracer_attribution/model with 64 features per layer (a smoke test;
timings meaningless). circuit-tracer runs in its own venv (``BENCH_CT_VENV``, default
benchmarks/.venv-ct, created on first use, as in clt_load); if that fails, its rows are
skipped with the reason recorded.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from .clt_load import ensure_ct_venv
from .common import ROOT, run_worker

TINY_MODEL = Path(ROOT).parent / "tests" / "golden" / "circuit_tracer_attribution" / "model"
FULL = {"features": 4096, "prompt_lengths": (8, 32), "max_feature_nodes": 2000,
        "max_n_logits": 10, "desired_logit_prob": 0.95, "batch_size": 256}
QUICK = {"features": 64, "prompt_lengths": (8,), "max_feature_nodes": 50,
         "max_n_logits": 5, "desired_logit_prob": 0.9, "batch_size": 32}
PARAMS = ("max_n_logits", "desired_logit_prob", "batch_size", "max_feature_nodes")
# fresh processes per prompt length: torch-mi's runs take seconds, circuit-tracer's minutes
# (4-12 min each at full size), so it runs once unless BENCH_CT_REPS says otherwise
REPS = {"full": (3, int(os.environ.get("BENCH_CT_REPS", "1"))), "quick": (1, 1)}
TEXT = ("The quick brown fox jumps over the lazy dog while the cat watches from the window. "
        "In the morning, the farmer walks to the market to sell apples, pears and fresh bread "
        "to the people of the small town by the river.")


def write_transcoders(root: Path, layers: int, d_model: int, features: int,
                      seed: int = 0) -> int:
    """Random per-layer JumpReLU transcoders in circuit-tracer's format; returns bytes.

    Encoder rows have unit norm (pre-activations ~ N(0, |x|^2 / d_model) on a normalised
    input), thresholds in [1.5, 2.5), so a few percent of features fire per position."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    for layer in range(layers):
        w_enc = torch.randn(features, d_model, generator=gen)
        tensors = {"W_enc": w_enc / w_enc.norm(dim=1, keepdim=True),
                   "b_enc": torch.zeros(features),
                   "W_dec": torch.randn(features, d_model, generator=gen) * 0.02,
                   "b_dec": torch.zeros(d_model),
                   "activation_function.threshold": 1.5 + torch.rand(features, generator=gen)}
        save_file(tensors, str(root / f"layer_{layer}.safetensors"))
    (root / "config.yaml").write_text(
        'model_name: "bench-random-plt"\nmodel_kind: transcoder_set\n'
        'feature_input_hook: "ln2.hook_normalized"\nfeature_output_hook: "hook_mlp_out"\n')
    return sum(p.stat().st_size for p in root.iterdir())


def prompt_ids(model_dir: Path, n: int) -> torch.Tensor:
    """BOS then the first ``n - 1`` token ids of a fixed text, [n] int64 (circuit-tracer
    prepends a special token to ids that do not start with one; this way both libraries
    get the same ids)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bos = json.loads((model_dir / "config.json").read_text())["bos_token_id"]
    ids = [bos, *tok.encode(TEXT, add_special_tokens=False).ids]
    if len(ids) < n:
        raise ValueError(f"the benchmark text has {len(ids)} tokens, fewer than {n}")
    return torch.tensor(ids[:n], dtype=torch.long)


def compare(ours_file: Path, ct_file: Path) -> dict:
    """Adjacency agreement: max |ours - ct| / max |ct|, and whether the graphs line up."""
    from safetensors.torch import load_file

    a, b = load_file(str(ours_file)), load_file(str(ct_file))
    same_nodes = (a["adjacency_matrix"].shape == b["adjacency_matrix"].shape
                  and torch.equal(a["selected_features"], b["selected_features"])
                  and torch.equal(a["logit_targets"], b["logit_targets"]))
    out = {"same_nodes": same_nodes,
           "same_active_features": torch.equal(a["active_features"], b["active_features"])}
    if a["logit_targets"].shape == b["logit_targets"].shape:
        out["logit_prob_max_abs_diff"] = (a["logit_probabilities"]
                                          - b["logit_probabilities"]).abs().max().item()
    if same_nodes:
        diff = (a["adjacency_matrix"] - b["adjacency_matrix"]).abs().max().item()
        out["max_abs_diff"] = diff
        out["max_rel_diff"] = diff / max(b["adjacency_matrix"].abs().max().item(), 1e-30)
    return out


def _runs(worker: str, args: list[str], reps: int, python: str | None = None) -> dict:
    """``reps`` fresh processes: the median run's figures plus every run's seconds and
    peak growth (the spread)."""
    runs = [run_worker(["-m", f"benchmarks.workers.{worker}", *args], python=python,
                       timeout=3600) for _ in range(reps)]
    median = sorted(runs, key=lambda r: r["attribute_s"])[len(runs) // 2]
    return {**median, "attribute_s": statistics.median(r["attribute_s"] for r in runs),
            "attribute_s_all": [r["attribute_s"] for r in runs],
            "peak_growth_all": [r["peak_growth"] for r in runs],
            "peak_growth": max(r["peak_growth"] for r in runs)}


def _one_prompt(n: int, size: dict, model_dir: Path, tc_dir: Path, tmp: Path,
                ct_python: str | None, reps: tuple[int, int]) -> dict:
    from safetensors.torch import save_file

    ids_file = tmp / f"ids_{n}.safetensors"
    save_file({"ids": prompt_ids(model_dir, n)}, str(ids_file))
    params = json.dumps({k: size[k] for k in PARAMS})
    args = [str(model_dir), str(tc_dir), str(ids_file)]
    ours_out, ct_out = tmp / f"ours_{n}.safetensors", tmp / f"ct_{n}.safetensors"
    row: dict = {"prompt_tokens": n, "torch-mi": _runs(
        "attribution_worker", [*args, str(ours_out), params], reps[0])}
    if ct_python is None:
        return row
    ct = _runs("ct_attribution_worker", [*args, str(ct_out), params], reps[1], ct_python)
    ours = row["torch-mi"]
    row["circuit-tracer"] = ct
    row["time_ratio"] = ours["attribute_s"] / ct["attribute_s"]
    row["time_ratio_range"] = [min(ours["attribute_s_all"]) / max(ct["attribute_s_all"]),
                               max(ours["attribute_s_all"]) / min(ct["attribute_s_all"])]
    row["rss_ratio"] = ours["peak_growth"] / max(ct["peak_growth"], 1)
    row["adjacency"] = compare(ours_out, ct_out)
    return row


def attribution(quick: bool = False) -> dict:
    """Write the transcoders, run both libraries per prompt length, compare."""
    size, reps = (QUICK, REPS["quick"]) if quick else (FULL, REPS["full"])
    if quick:
        model_dir = TINY_MODEL
    else:
        from .assets import hf_copy

        model_dir = hf_copy()
    config = json.loads((model_dir / "config.json").read_text())
    layers, d_model = config["num_hidden_layers"], config["hidden_size"]
    out: dict = {"model": str(model_dir), "layers": layers, "d_model": d_model, **size,
                 "prompt_lengths": list(size["prompt_lengths"]), "reps": list(reps)}
    try:
        ct_python: str | None = str(ensure_ct_venv())
    except Exception as exc:  # recorded; the torch-mi figures still stand
        ct_python, out["circuit-tracer skipped"] = None, f"{type(exc).__name__}: {exc}"[-1000:]
    with tempfile.TemporaryDirectory(prefix="attr_bench_") as tmp:
        tc_dir = Path(tmp) / "transcoders"
        out["transcoder_bytes"] = write_transcoders(tc_dir, layers, d_model, size["features"])
        out["runs"] = [_one_prompt(n, size, model_dir, tc_dir, Path(tmp), ct_python, reps)
                       for n in size["prompt_lengths"]]
    return out


def target_rows(c: dict) -> list[tuple[str, str, str, bool | None]]:
    """SPEC §11: wall time and peak RSS <= 0.5x circuit-tracer's, with the same graph."""
    rows = []
    for r in c["runs"]:
        ours, n = r["torch-mi"], r["prompt_tokens"]
        runs = ", ".join(f"{t:.1f}" for t in ours["attribute_s_all"])
        if "circuit-tracer" not in r:
            rows.append((f"attribute {n} tokens: torch-mi s (runs)", runs, "(no oracle)", None))
            continue
        ct, adj = r["circuit-tracer"], r["adjacency"]
        lo, hi = r["time_ratio_range"]
        rows.append((f"attribute {n} tokens: time / circuit-tracer",
                     f"{r['time_ratio']:.3f}x (range {lo:.3f}-{hi:.3f}; torch-mi {runs} s, "
                     f"circuit-tracer {ct['attribute_s']:.1f} s)", "<= 0.5x", hi <= 0.5))
        rows.append((f"attribute {n} tokens: peak RSS / circuit-tracer",
                     f"{r['rss_ratio']:.3f}x ({ours['peak_growth'] / 2**20:.0f} / "
                     f"{ct['peak_growth'] / 2**20:.0f} MiB)", "<= 0.5x", r["rss_ratio"] <= 0.5))
        same = adj["same_nodes"] and adj.get("max_rel_diff", 1.0) <= 1e-4
        rows.append((f"attribute {n} tokens: same graph",
                     f"same nodes {adj['same_nodes']}, max rel. adjacency diff "
                     f"{adj.get('max_rel_diff', float('nan')):.1e}", "1e-4", same))
    return rows


def markdown(c: dict) -> list[str]:
    lines = ["", "## Attribution graphs: torch-mi vs circuit-tracer (issue 14)", "",
             f"`{Path(c['model']).name}` ({c['layers']} layers, d_model {c['d_model']}), random "
             f"per-layer JumpReLU transcoders with {c['features']} features per layer "
             f"({c['transcoder_bytes'] / 2**20:.0f} MiB, the same files for both), "
             f"max_feature_nodes {c['max_feature_nodes']}, batch {c['batch_size']}, "
             f"max_n_logits {c['max_n_logits']}, desired_logit_prob {c['desired_logit_prob']}. "
             f"One fresh process per run ({c['reps'][0]} torch-mi runs, {c['reps'][1]} "
             "circuit-tracer run(s) per prompt; all listed); the time ratio is the medians'; "
             "peak RSS growth (the largest seen) covers loading and attribution.", "",
             "| tokens | active features | torch-mi attribute s | circuit-tracer s | time ratio "
             "| torch-mi peak | circuit-tracer peak | RSS ratio | max rel. adjacency diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in c["runs"]:
        ours, ct = r["torch-mi"], r.get("circuit-tracer")
        if ct is None:
            lines.append(f"| {r['prompt_tokens']} | {ours['n_active']} | "
                         f"{ours['attribute_s']:.2f} | skipped | - | "
                         f"{ours['peak_growth'] / 2**20:.0f} MiB | - | - | - |")
            continue
        adj = r["adjacency"]
        diff = f"{adj['max_rel_diff']:.1e}" if adj["same_nodes"] else "nodes differ"
        lines.append(f"| {r['prompt_tokens']} | {ours['n_active']} | "
                     f"{' / '.join(f'{t:.2f}' for t in ours['attribute_s_all'])} "
                     f"| {' / '.join(f'{t:.1f}' for t in ct['attribute_s_all'])} | "
                     f"{r['time_ratio']:.3f} | "
                     f"{ours['peak_growth'] / 2**20:.0f} MiB | {ct['peak_growth'] / 2**20:.0f} "
                     f"MiB | {r['rss_ratio']:.2f} | {diff} |")
    if "circuit-tracer skipped" in c:
        lines.append(f"\ncircuit-tracer skipped: `{c['circuit-tracer skipped']}`")
    return lines
