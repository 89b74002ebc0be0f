"""Scenario 4: greedy generation of 64 tokens with a KV cache vs transformers.generate."""

from __future__ import annotations

import statistics
import time

import torch

PROMPT = "The capital of France is"


def greedy_generation(ours, hf, tokenizer, new_tokens: int = 64, reps: int = 3) -> dict:
    ids = ours.encode(PROMPT)
    ours_times, hf_times = [], []
    with torch.inference_mode():
        ours.generate(ids[0].tolist(), 4, ignore_eos=True)
        hf.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        for _ in range(reps):  # interleaved
            start = time.perf_counter()
            mine = ours.generate(ids[0].tolist(), new_tokens, ignore_eos=True)
            ours_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.padding_id)
            hf_times.append(time.perf_counter() - start)
    same = mine.step_tokens == theirs[0, ids.shape[1]:].tolist()
    ours_rate = new_tokens / statistics.median(ours_times)
    hf_rate = new_tokens / statistics.median(hf_times)
    return {"new_tokens": new_tokens, "reps": reps, "torch-mi_tok_s": ours_rate,
            "hf_tok_s": hf_rate, "ratio": ours_rate / hf_rate, "same_tokens": same,
            "torch-mi_seconds": ours_times, "hf_seconds": hf_times,
            "text": mine.generated_text}
