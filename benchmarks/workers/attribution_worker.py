"""torch-mi's ``attribute()`` on an HF folder with per-layer transcoders, in a fresh process;
prints seconds and peak RSS as JSON and saves the graph tensors for the cross-check.

Usage: python -m benchmarks.workers.attribution_worker MODEL_DIR TRANSCODER_DIR IDS_FILE
       OUT_FILE PARAMS_JSON   (arguments as in ct_attribution_worker)
"""

import os

import torch

from benchmarks.workers.ct_attribution_worker import Marks, read_args, report

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def main() -> None:
    import torch_mi
    from torch_mi.attribution import attribute
    from torch_mi.dictionaries import CrossLayerTranscoder

    model_dir, tc_dir, ids, out_file, params = read_args()
    marks = Marks()
    model = torch_mi.MIModel.from_pretrained(model_dir, device="cpu")
    transcoders = CrossLayerTranscoder.from_local(tc_dir)
    marks.loaded()
    graph = attribute(model, ids, transcoders, **params)
    marks.attributed()
    report(graph, out_file, marks)


if __name__ == "__main__":
    main()
