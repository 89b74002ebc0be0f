"""Harvest throughput (issue 15, SPEC §11), fp32 CPU, SmolLM2, 128-token packed sequences,
``hook_resid_post`` of 3 layers (a quarter, half and the last block), batch size 8.

Targets: the local engine's tokens/s >= 0.9x the raw batched no-hook forward's
(``model.forward(ids)`` on the same pre-tokenised batches, logits included); the Ray engine
with 2 single-threaded actors >= 0.8x the local engine with 2 threads (in a worker process
that starts its own 2-CPU Ray). Harvest wall time includes everything a user waits for:
hashing and tokenising the corpus, the forwards, writing, fsync and checksums (and for Ray
the actors' start-up and model load). Also reported: the raw forward stopped after the last
captured block (what the harvest runs: no final norm or unembedding), so the ratio can be
read both ways. Corpus: the Python help topics of the stdlib (``pydoc_data.topics``), as
JSONL, so it exists everywhere.

Standalone: ``python -m benchmarks.harvest [--quick] [--model PATH]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

SEQ_LEN, BATCH = 128, 8


def write_corpus(folder: Path) -> Path:
    from pydoc_data.topics import topics

    path = folder / "pydoc_topics.jsonl"
    path.write_text("".join(json.dumps({"text": topics[k]}) + "\n" for k in sorted(topics)))
    return path


def _points(model) -> list[str]:
    n = model.num_layers
    return [f"blocks.{i}.hook_resid_post" for i in (n // 4, n // 2, n - 1)]


def _stats(samples: list[float], tokens: int) -> dict:
    s = sorted(samples)
    return {"median_s": s[len(s) // 2], "min_s": s[0], "max_s": s[-1], "runs": len(s),
            "tokens": tokens, "tokens_per_s": tokens / s[len(s) // 2]}


def local_vs_raw(model, quick: bool = False) -> dict:
    """Interleaved runs (raw, raw-stopped, harvest) x reps on the same tokens."""
    from torch_mi.harvest import ActivationStore, harvest

    n_seqs, reps = (8, 1) if quick else (64, 3)
    seq_len = 32 if quick else SEQ_LEN
    points = _points(model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = write_corpus(tmp)
        kwargs = dict(seq_len=seq_len, batch_size=BATCH, max_tokens=n_seqs * seq_len,
                      progress=False)
        harvest(model, corpus, points, tmp / "ids", **kwargs)  # warm-up, and the token ids
        ids = ActivationStore(tmp / "ids").tokens()  # [N, S]
        tokens = ids.numel()
        times: dict[str, list[float]] = {"raw_forward": [], "raw_stopped": [], "harvest": []}
        for rep in range(reps):
            with torch.inference_mode():
                start = time.perf_counter()
                for b in range(0, len(ids), BATCH):
                    model.forward(ids[b:b + BATCH])
                times["raw_forward"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for b in range(0, len(ids), BATCH):
                    model.forward(ids[b:b + BATCH], stop_at_layer=model.num_layers)
                times["raw_stopped"].append(time.perf_counter() - start)
            out = tmp / f"run{rep}"
            start = time.perf_counter()
            harvest(model, corpus, points, out, **kwargs)
            times["harvest"].append(time.perf_counter() - start)
            shutil.rmtree(out)
    res = {k: _stats(v, tokens) for k, v in times.items()}
    return {"seq_len": seq_len, "batch_size": BATCH, "points": points, **res,
            "ratio_vs_raw": res["harvest"]["tokens_per_s"] / res["raw_forward"]["tokens_per_s"],
            "ratio_vs_raw_stopped": (res["harvest"]["tokens_per_s"]
                                     / res["raw_stopped"]["tokens_per_s"])}


def ray_vs_local(model_path: str, quick: bool = False) -> dict:
    """In THIS process: a 2-CPU Ray, 2 single-threaded actors vs local with 2 threads."""
    import ray

    import torch_mi as mi
    from torch_mi.harvest import harvest

    torch.set_num_threads(2)
    model = mi.MIModel.from_pretrained(model_path, device="cpu")
    n_seqs, reps = (8, 1) if quick else (128, 3)
    seq_len = 32 if quick else SEQ_LEN
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    times: dict[str, list[float]] = {"local_2_threads": [], "ray_2_actors": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            corpus = write_corpus(tmp)
            # 4 shards per actor at least, so both actors work
            kwargs = dict(seq_len=seq_len, batch_size=BATCH, max_tokens=n_seqs * seq_len,
                          shard_tokens=max(seq_len, n_seqs * seq_len // 8), progress=False)
            same = True
            for _ in range(reps):
                for name, engine in (("local_2_threads", "local"), ("ray_2_actors", "ray")):
                    start = time.perf_counter()
                    harvest(model, corpus, _points(model), tmp / name, engine=engine,
                            ray_options={"num_workers": 2, "num_cpus": 1}, **kwargs)
                    times[name].append(time.perf_counter() - start)
                files = sorted(p.name for p in (tmp / "local_2_threads").iterdir())
                same = same and files == sorted(p.name for p in (tmp / "ray_2_actors").iterdir()) \
                    and all((tmp / "local_2_threads" / f).read_bytes()
                            == (tmp / "ray_2_actors" / f).read_bytes() for f in files)
                for name in times:
                    shutil.rmtree(tmp / name)
    finally:
        ray.shutdown()
    tokens = n_seqs * seq_len
    res = {k: _stats(v, tokens) for k, v in times.items()}
    return {**res, "byte_identical": same,
            "ratio": res["ray_2_actors"]["tokens_per_s"] / res["local_2_threads"]["tokens_per_s"]}


def harvest_benchmarks(model, model_path: str, quick: bool = False) -> dict:
    """Both comparisons; the Ray one in a fresh process (its own Ray, its own threads)."""
    from .common import run_worker

    out = {"local": local_vs_raw(model, quick)}
    try:
        out["ray"] = run_worker(["-m", "benchmarks.harvest", "--ray-worker", "--model",
                                 model_path, *(["--quick"] if quick else [])])
    except Exception as exc:  # Ray is optional: record why there is no figure
        out["ray"] = {"error": f"{type(exc).__name__}: {exc}"[-600:]}
    return out


def scenario(ours, model_dir: str | None, quick: bool) -> dict:
    """The ``harvest`` scenario of ``python -m benchmarks`` (same model file as ``ours``)."""
    from .assets import gguf_path

    return harvest_benchmarks(ours, str(model_dir or gguf_path()), quick)


def target_rows(h: dict) -> list[tuple[str, str, str, bool | None]]:
    rows = [(f"harvest local engine / raw batched forward tokens/s ({h['local']['seq_len']} tok, "
             f"3x resid_post)", f"{h['local']['ratio_vs_raw']:.2f}x", ">= 0.9x",
             h["local"]["ratio_vs_raw"] >= 0.9)]
    ray = h.get("ray", {})
    if "ratio" in ray:
        rows.append(("harvest Ray 2 actors / local 2 threads tokens/s", f"{ray['ratio']:.2f}x",
                     ">= 0.8x", ray["ratio"] >= 0.8 and ray["byte_identical"]))
    return rows


def markdown(h: dict) -> list[str]:
    loc = h["local"]
    lines = ["", "### Harvest (issue 15)", "",
             "| run | tokens | median s (min-max) | tokens/s |", "|---|---|---|---|"]
    for name in ("raw_forward", "raw_stopped", "harvest"):
        r = loc[name]
        lines.append(f"| {name} | {r['tokens']} | {r['median_s']:.2f} ({r['min_s']:.2f}-"
                     f"{r['max_s']:.2f}) | {r['tokens_per_s']:.0f} |")
    for name in ("local_2_threads", "ray_2_actors"):
        r = h.get("ray", {}).get(name)
        if r:
            lines.append(f"| {name} | {r['tokens']} | {r['median_s']:.2f} ({r['min_s']:.2f}-"
                         f"{r['max_s']:.2f}) | {r['tokens_per_s']:.0f} |")
    if "error" in h.get("ray", {}):
        lines.append(f"\nRay comparison not run: {h['ray']['error']}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.harvest", description=__doc__)
    p.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ray-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ray_worker:
        print(json.dumps(ray_vs_local(args.model, args.quick)))
        return 0
    import torch_mi as mi

    from .assets import gguf_path
    from .common import setup_threads

    setup_threads()
    path = args.model or str(gguf_path())
    model = mi.MIModel.from_pretrained(path, device="cpu")
    print(json.dumps(harvest_benchmarks(model, path, args.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
