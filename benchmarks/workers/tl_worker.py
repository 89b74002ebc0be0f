"""Runs inside a TransformerLens 3.9 venv (where torch-mi is installed too): builds
HookedTransformer from the fp32 HF copy of SmolLM2 (raw weights, no folding) and times its
forward and run_with_cache side by side with torch-mi's capture-everything forward on the
same weights, interleaved, in this one process.

Usage (from the repository root): python -m benchmarks.workers.tl_worker HF_DIR SEQ_LEN REPS
"""

import json
import os
import sys

import torch

from benchmarks.common import time_calls

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))

from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.loading_from_pretrained import convert_hf_model_config  # noqa: E402
from transformer_lens.pretrained import weight_conversions  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

RAW = dict(fold_ln=False, center_writing_weights=False, center_unembed=False,
           fold_value_biases=False)


def main():
    hf_dir, seq_len, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    cfg = HookedTransformerConfig(**convert_hf_model_config(hf_dir), dtype=torch.float32,
                                  device="cpu")
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(weight_conversions.convert_llama_weights(hf, cfg), **RAW)
    model.eval()
    import torch_mi

    ours = torch_mi.MIModel.from_pretrained(hf_dir, device="cpu")
    everything = torch_mi.HookSpec().capture(*ours.hook_points())
    ids = torch.randint(100, 30000, (1, seq_len), generator=torch.Generator().manual_seed(seq_len))
    with torch.inference_mode():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
        ours_diff = (ours.forward(ids).output() - hf(ids).logits).abs().max().item()
        times = time_calls({"forward": lambda: model(ids),
                            "run_with_cache": lambda: model.run_with_cache(ids),
                            "torch-mi capture-all": lambda: ours.forward(ids, everything),
                            "torch-mi no-hooks": lambda: ours.forward(ids)}, reps)
        result = {**{name: t.to_dict() for name, t in times.items()}, "max_abs_logit_diff_vs_hf": diff,
                  "torch_mi_max_abs_logit_diff_vs_hf": ours_diff, "seq_len": seq_len,
                  "cache_entries": len(model.run_with_cache(ids)[1]),
                  "torch_mi_captures": everything.num_captures()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
