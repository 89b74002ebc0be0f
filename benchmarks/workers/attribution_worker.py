"""torch-mi's ``attribute()`` on an HF folder with per-layer transcoders, in a fresh process;
prints seconds and peak RSS as JSON and saves the graph tensors for the cross-check.

Usage: python -m benchmarks.workers.attribution_worker MODEL_DIR TRANSCODER_DIR IDS_FILE
       OUT_FILE PARAMS_JSON   (arguments as in ct_attribution_worker)
"""

import json
import os
import sys
import time

import torch

from benchmarks.workers.ct_attribution_worker import _status, reset_peak

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def main() -> None:
    model_dir, tc_dir, ids_file, out_file, params_json = sys.argv[1:6]
    from safetensors.torch import load_file, save_file

    import torch_mi
    from torch_mi.attribution import attribute
    from torch_mi.dictionaries import CrossLayerTranscoder

    params = json.loads(params_json)
    ids = load_file(ids_file)["ids"]  # [S]
    reset_peak()
    baseline = _status("VmRSS")
    start = time.perf_counter()
    model = torch_mi.MIModel.from_pretrained(model_dir, device="cpu")
    transcoders = CrossLayerTranscoder.from_local(tc_dir)
    loaded = time.perf_counter()
    load_peak = _status("VmHWM")
    reset_peak()
    before_attr = _status("VmRSS")
    graph = attribute(model, ids, transcoders, **params)
    end = time.perf_counter()
    attr_peak = _status("VmHWM")
    adjacency = getattr(graph, "adjacency_matrix", None)
    if adjacency is None:
        adjacency = graph.adjacency
    save_file({"adjacency_matrix": adjacency.contiguous(),
               "active_features": graph.active_features.contiguous(),
               "selected_features": graph.selected_features.contiguous(),
               "logit_targets": graph.logit_token_ids.contiguous(),
               "logit_probabilities": graph.logit_probabilities.contiguous()}, out_file)
    print(json.dumps({
        "load_s": loaded - start, "attribute_s": end - loaded, "seconds": end - start,
        "baseline_rss": baseline, "peak_rss": max(load_peak, attr_peak),
        "peak_growth": max(load_peak, attr_peak) - baseline,
        "attribute_peak_growth": attr_peak - before_attr,
        "n_active": int(graph.active_features.shape[0]),
        "n_selected": int(graph.selected_features.shape[0]),
        "n_nodes": int(adjacency.shape[0])}))


if __name__ == "__main__":
    main()
