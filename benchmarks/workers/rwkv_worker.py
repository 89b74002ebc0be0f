"""RWKV scenario, one version per process: torch-mi against the ``rwkv`` package (BlinkDL,
``cpu fp32``, its TorchScript path) on the same random checkpoint, same threads.

Usage: RWKV_V7_ON=1|0 python -m benchmarks.workers.rwkv_worker v6|v7 full|quick
(the package picks RWKV-7 at import time from RWKV_V7_ON, hence a process per version).
Prints the figures as JSON on its last line.
"""

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))

PLAN = {"full": {"prompt": 512, "new_tokens": 64, "reps": 5, "warmup": 2},
        "quick": {"prompt": 24, "new_tokens": 4, "reps": 1, "warmup": 1}}


def _load(version: str, size: str):
    """(package model, torch-mi model) from one BlinkDL .pth written to a temporary dir."""
    from rwkv.model import RWKV

    import torch_mi

    from ..rwkv_models import FULL, QUICK, build

    shape = FULL if size == "full" else QUICK
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / f"rwkv-{version}.pth"
        torch.save(build(version, shape), pth)
        kwargs = {"verbose": False} if version == "v6" else {}
        package = RWKV(model=str(pth.with_suffix("")), strategy="cpu fp32", **kwargs)
        ours = torch_mi.MIModel.from_pretrained(pth, device="cpu", dtype="float32")
    return package, ours, shape


def _projections_only(ours, seq_len: int):
    """A callable running every ``Linear`` of our model (the r/k/v/g/o projections, the
    channel mix, RWKV-7's LoRAs, the head on one row) on random inputs of the prompt's
    shapes, nothing else: the fp32 GEMM work any implementation of the same forward does.
    Timed next to the package it bounds the reachable speedup (package / these matmuls),
    whatever the rest of a forward costs."""
    from torch_mi.backends.rwkv.ops import Linear

    backend = ours.backend
    layers = [m for m in backend.modules() if isinstance(m, Linear)]
    gen = torch.Generator().manual_seed(1)
    inputs = {n: torch.randn(1, seq_len, n, generator=gen) for n in
              {m.in_features for m in layers}}

    def run() -> None:
        for m in layers:
            x = inputs[m.in_features]
            m(x[:, -1:] if m is backend.head else x)

    return run


def _prompt(package, ours, ids: list[int], plan: dict) -> dict:
    """Prompt of ``ids``: the package's sequence mode vs ours (chunked WKV; and, as context,
    the token-by-token recurrence and our projections alone), both returning the last
    position's logits."""
    from ..common import time_calls

    x = torch.tensor([ids])
    backend = ours.backend

    def recurrent():
        backend.chunked_wkv = False
        try:
            return ours.forward(x, last_logits_only=True)
        finally:
            backend.chunked_wkv = True

    t = time_calls({"package": lambda: package.forward(ids, None),
                    "torch-mi": lambda: ours.forward(x, last_logits_only=True),
                    "torch-mi recurrent": recurrent,
                    "projections only": _projections_only(ours, len(ids))},
                   plan["reps"], plan["warmup"])
    with torch.inference_mode():
        theirs = package.forward(ids, None)[0].float()
        mine = ours.forward(x, last_logits_only=True).output()[0, -1]
    return {"tokens": len(ids), **{k: v.to_dict() for k, v in t.items()},
            "speedup": t["package"].median / t["torch-mi"].median,
            "chunked_speedup": t["torch-mi recurrent"].median / t["torch-mi"].median,
            "speedup_bound": t["package"].median / t["projections only"].median,
            "max_abs_logit_diff": float((mine - theirs).abs().max())}


def _decode_ours(ours, ids: list[int], n: int) -> tuple[float, list[int]]:
    state = ours.make_state()
    logits = ours.forward(torch.tensor([ids]), state=state, last_logits_only=True).output()
    tokens, start = [], time.perf_counter()
    for _ in range(n):
        tokens.append(int(logits[0, -1].argmax()))
        logits = ours.forward(torch.tensor([[tokens[-1]]]), state=state,
                              last_logits_only=True).output()
    return time.perf_counter() - start, tokens


def _decode_package(package, ids: list[int], n: int) -> tuple[float, list[int]]:
    logits, state = package.forward(ids, None)
    tokens, start = [], time.perf_counter()
    for _ in range(n):
        tokens.append(int(logits.argmax()))
        logits, state = package.forward([tokens[-1]], state)
    return time.perf_counter() - start, tokens


def _generation(package, ours, ids: list[int], plan: dict) -> dict:
    """Greedy decoding of ``new_tokens`` after the prompt, one token per call with the
    recurrent state (the prompt itself is not timed), interleaved per repetition."""
    n, mine, theirs = plan["new_tokens"], [], []
    with torch.inference_mode():
        _decode_ours(ours, ids, 2)  # warm-up
        _decode_package(package, ids, 2)
        for _ in range(plan["reps"]):
            seconds, ours_tokens = _decode_ours(ours, ids, n)
            mine.append(seconds)
            seconds, package_tokens = _decode_package(package, ids, n)
            theirs.append(seconds)
    ours_rate, package_rate = n / statistics.median(mine), n / statistics.median(theirs)
    return {"new_tokens": n, "torch-mi_tok_s": ours_rate, "package_tok_s": package_rate,
            "ratio": ours_rate / package_rate, "same_tokens": ours_tokens == package_tokens}


def _capture(ours, ids: list[int], plan: dict) -> dict:
    """Capture of every hook point (effective attention included) vs no hooks, full logits;
    and, as context, everything but effective attention (an O(S²) analysis product)."""
    from torch_mi import HookSpec

    from ..common import time_calls

    x = torch.tensor([ids])
    points = list(ours.hook_points())
    everything = HookSpec().capture(*points)
    no_eff = HookSpec().capture(*(p for p in points if "effective_attn" not in str(p)))
    t = time_calls({"no-hooks": lambda: ours.forward(x),
                    "capture-all": lambda: ours.forward(x, everything),
                    "capture-all-but-effective-attn": lambda: ours.forward(x, no_eff)},
                   plan["reps"], plan["warmup"])
    base = t["no-hooks"].median
    return {"seq_len": len(ids), "points": everything.num_captures(),
            **{k: v.to_dict() for k, v in t.items()},
            "ratio": t["capture-all"].median / base,
            "ratio_without_effective_attn": t["capture-all-but-effective-attn"].median / base}


def main() -> None:
    version, size = sys.argv[1], sys.argv[2]
    if version not in ("v6", "v7") or size not in PLAN:
        raise SystemExit("usage: rwkv_worker v6|v7 full|quick")
    if (os.environ.get("RWKV_V7_ON") == "1") != (version == "v7"):
        raise SystemExit("set RWKV_V7_ON=1 for v7 (and not for v6) before starting")
    plan = PLAN[size]
    package, ours, shape = _load(version, size)
    ids = torch.randint(0, shape.vocab, (plan["prompt"],),
                        generator=torch.Generator().manual_seed(0)).tolist()
    figures = {"version": version, "shape": asdict(shape), "threads": torch.get_num_threads(),
               "prompt": _prompt(package, ours, ids, plan),
               "generation": _generation(package, ours, ids, plan),
               "capture": _capture(ours, ids, plan)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
