"""Runs inside a TransformerLens 3.9 venv: builds HookedTransformer from the fp32 HF copy of
SmolLM2 (raw weights, no folding) and times forward and run_with_cache.

Usage: python tl_worker.py HF_DIR SEQ_LEN REPS
"""

import json
import os
import statistics
import sys
import time

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))

from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.loading_from_pretrained import convert_hf_model_config  # noqa: E402
from transformer_lens.pretrained import weight_conversions  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

RAW = dict(fold_ln=False, center_writing_weights=False, center_unembed=False,
           fold_value_biases=False)


def timed(fn, reps):
    fn()
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": reps}


def main():
    hf_dir, seq_len, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    cfg = HookedTransformerConfig(**convert_hf_model_config(hf_dir), dtype=torch.float32,
                                  device="cpu")
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(weight_conversions.convert_llama_weights(hf, cfg), **RAW)
    model.eval()
    ids = torch.randint(100, 30000, (1, seq_len), generator=torch.Generator().manual_seed(seq_len))
    with torch.inference_mode():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
        result = {"forward": timed(lambda: model(ids), reps),
                  "run_with_cache": timed(lambda: model.run_with_cache(ids), reps),
                  "max_abs_logit_diff_vs_hf": diff, "seq_len": seq_len,
                  "cache_entries": len(model.run_with_cache(ids)[1])}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
