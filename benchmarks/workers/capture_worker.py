"""Scenario 2 in a fresh process, so a malloc setting read at start-up applies to it.

Usage: TORCH_MI_KEEP_FREED_MEMORY=0 python -m benchmarks.workers.capture_worker PATH SEQ_LEN full|quick
Prints the capture_all figures and the malloc policy in force as JSON.
"""

import json
import os
import sys

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def main() -> None:
    import torch_mi
    from torch_mi.memory import allocator_policy

    from ..forward import capture_all

    path, seq_len, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "quick"
    model = torch_mi.MIModel.from_pretrained(path, device="cpu", dtype="float32")
    figures = capture_all(model, seq_len, quick)
    print(json.dumps({**figures, "malloc": allocator_policy()}))


if __name__ == "__main__":
    main()
