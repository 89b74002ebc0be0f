"""Scenarios 1, 2 and 5: forward passes without hooks, with every hook captured, and the
cost of hooks as a function of captured points and sequence length."""

from __future__ import annotations

import torch

from .common import Timing, time_calls

SEQ_LENS = (8, 128, 512)


def _ids(seq_len: int, vocab: int) -> torch.Tensor:
    return torch.randint(100, min(vocab, 30000), (1, seq_len),
                         generator=torch.Generator().manual_seed(seq_len))


def _reps(seq_len: int, quick: bool) -> int:
    if quick:
        return 2
    return 15 if seq_len <= 128 else 6


def forward_no_hooks(ours, hf_sdpa, hf_eager, seq_lens=SEQ_LENS, quick=False) -> list[dict]:
    """Scenario 1: torch-mi vs transformers (sdpa and eager), fp32, no hooks."""
    rows = []
    for seq_len in seq_lens:
        ids = _ids(seq_len, ours.vocab_size)
        t = time_calls({"torch-mi": lambda x=ids: ours.forward(x),
                        "hf-sdpa": lambda x=ids: hf_sdpa(x),
                        "hf-eager": lambda x=ids: hf_eager(x)}, _reps(seq_len, quick))
        rows.append({"seq_len": seq_len, **{k: v.to_dict() for k, v in t.items()},
                     "ratio_vs_sdpa": t["torch-mi"].median / t["hf-sdpa"].median,
                     "ratio_vs_eager": t["torch-mi"].median / t["hf-eager"].median})
    return rows


def capture_all(ours, seq_len=128, quick=False) -> dict:
    """Scenario 2 (our side): capture every hook point vs no hooks."""
    from torch_mi import HookSpec

    ids = _ids(seq_len, ours.vocab_size)
    everything = HookSpec().capture(*ours.hook_points())
    t = time_calls({"no-hooks": lambda: ours.forward(ids),
                    "capture-all": lambda: ours.forward(ids, everything)},
                   _reps(seq_len, quick))
    return {"seq_len": seq_len, "points": everything.num_captures(),
            **{k: v.to_dict() for k, v in t.items()},
            "ratio": t["capture-all"].median / t["no-hooks"].median}


def hook_scaling(ours, seq_lens=SEQ_LENS, quick=False) -> list[dict]:
    """Scenario 5: time vs number of captured points (0, 1, all) and vs sequence length."""
    from torch_mi import HookPoint, HookSpec

    rows = []
    for seq_len in seq_lens:
        ids = _ids(seq_len, ours.vocab_size)
        specs = {"0 points": HookSpec(),
                 "1 point": HookSpec().capture(HookPoint.ResidPost(ours.num_layers // 2)),
                 "1 pattern": HookSpec().capture(HookPoint.AttnPattern(ours.num_layers // 2)),
                 "all points": HookSpec().capture(*ours.hook_points())}
        t: dict[str, Timing] = time_calls(
            {name: (lambda s=spec, x=ids: ours.forward(x, s)) for name, spec in specs.items()},
            _reps(seq_len, quick))
        base = t["0 points"].median
        rows.append({"seq_len": seq_len, **{k: v.to_dict() for k, v in t.items()},
                     "ratios": {k: v.median / base for k, v in t.items()}})
    return rows
