"""Open a circuit-tracer-layout CLT one way and encode every layer, in a fresh process; print
seconds and peak RSS growth as JSON.

Usage: python -m benchmarks.workers.clt_worker MODE CLT_DIR INPUT_FILE
MODE: ours-lazy (torch_mi.dictionaries.CrossLayerTranscoder) | ct-lazy (circuit-tracer
load_clt, lazy_encoder=True) | ct-default (its defaults: encoders eager, decoders lazy) |
ct-eager (lazy_encoder=False, lazy_decoder=False: everything in memory).

Runs in torch-mi's venv (ours-*) or in circuit-tracer's own venv (ct-*), so it imports only
torch, safetensors and the library under test; RSS comes from /proc, not psutil.
"""

import json
import os
import sys
import time

import torch
from safetensors.torch import load_file

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (a child inherits its parent's high-water mark)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _summary(acts: torch.Tensor) -> list[float]:
    """[1,S,F] activations -> (sum, nonzeros): enough to cross-check the two libraries
    without keeping every layer's activations alive (which would count in the peak)."""
    return [float(acts.double().sum()), float((acts != 0).sum())]


def open_ours(path: str):
    from torch_mi.dictionaries import CrossLayerTranscoder

    clt = CrossLayerTranscoder.from_local(path)
    return clt.config.n_layers, clt.encode_dense  # the bound method keeps clt alive


def open_ct(mode: str, path: str):
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

    lazy_encoder = mode == "ct-lazy"
    lazy_decoder = mode != "ct-eager"
    clt = load_clt(path, device=torch.device("cpu"), dtype=torch.float32,
                   lazy_encoder=lazy_encoder, lazy_decoder=lazy_decoder)
    return clt.n_layers, clt.encode_layer


def main() -> None:
    mode, path, input_file = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode.startswith("ours"):
        import torch_mi.dictionaries  # noqa: F401  (imports are not part of the time)
    else:
        import circuit_tracer.transcoder.cross_layer_transcoder  # noqa: F401
    x = load_file(input_file)["x"]  # [L,1,S,D]: one [1,S,D] input per layer
    reset_peak()
    baseline = _status("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        n_layers, encode = open_ours(path) if mode.startswith("ours") else open_ct(mode, path)
        opened = time.perf_counter()
        sums = [_summary(encode(x[layer], layer)) for layer in range(n_layers)]
    end = time.perf_counter()
    peak = _status("VmHWM")
    print(json.dumps({"mode": mode, "open_s": opened - start, "encode_s": end - opened,
                      "seconds": end - start, "peak_rss": peak, "baseline_rss": baseline,
                      "peak_growth": peak - baseline, "layers": n_layers, "summary": sums}))


if __name__ == "__main__":
    main()
