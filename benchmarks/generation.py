"""Scenario 4: greedy generation of 64 tokens with a KV cache vs transformers.generate."""

from __future__ import annotations

import statistics
import time

import torch

PROMPT = "The capital of France is"


def greedy_generation(ours, hf, tokenizer, new_tokens: int = 64, reps: int = 3) -> dict:
    """Both sides produce exactly ``new_tokens`` tokens: EOS does not stop either of them
    (HF's EOS is unset for the run; ``min_new_tokens`` would instead suppress EOS and change
    the tokens)."""
    ids = ours.encode(PROMPT)
    saved_eos, hf.generation_config.eos_token_id = hf.generation_config.eos_token_id, None
    try:
        with torch.inference_mode():
            times = _interleaved(ours, hf, ids, new_tokens, reps, tokenizer.padding_id)
    finally:
        hf.generation_config.eos_token_id = saved_eos
    mine, theirs, ours_times, hf_times = times
    same = mine.step_tokens == theirs[0, ids.shape[1]:].tolist()
    ours_rate = new_tokens / statistics.median(ours_times)
    hf_rate = new_tokens / statistics.median(hf_times)
    return {"new_tokens": new_tokens, "reps": reps, "torch-mi_tok_s": ours_rate,
            "hf_tok_s": hf_rate, "ratio": ours_rate / hf_rate, "same_tokens": same,
            "torch-mi_seconds": ours_times, "hf_seconds": hf_times,
            "text": mine.generated_text}


def _interleaved(ours, hf, ids, new_tokens: int, reps: int, pad_id: int):
    ours.generate(ids[0].tolist(), 4, ignore_eos=True)  # warm-up
    hf.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=pad_id)
    ours_times, hf_times = [], []
    for _ in range(reps):
        start = time.perf_counter()
        mine = ours.generate(ids[0].tolist(), new_tokens, ignore_eos=True)
        ours_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = hf.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=pad_id)
        hf_times.append(time.perf_counter() - start)
    return mine, theirs, ours_times, hf_times
