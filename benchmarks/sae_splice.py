"""SAE splice cost: a random SAELens-format SAE of 16x width at a middle layer's
``hook_resid_post``, spliced into the forward, against the plain forward, fp32.

Target (issue 13): the forward with the splice (encode + decode + error term) on SmolLM2 at
128 tokens is <= 1.3x the plain forward. Also times the splice without the error term,
with the feature activations captured, and ``encode`` alone on the captured activation;
and records that the error-term splice reproduces the plain logits (checked once, outside
the timings).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .common import time_calls
from .forward import _ids, _reps

SEQ_LEN = 128
EXPANSION = 16


def _write_sae(folder: Path, hook: str, d_in: int, d_sae: int) -> None:
    import json

    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    weights = {"W_enc": torch.randn(d_in, d_sae, generator=gen) * d_in ** -0.5,
               "b_enc": torch.zeros(d_sae), "W_dec": torch.randn(d_sae, d_in, generator=gen) * 0.05,
               "b_dec": torch.zeros(d_in)}
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none",
           "architecture": "standard", "metadata": {"hook_name": hook}}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(folder / "sae_weights.safetensors"))


def sae_splice(ours, seq_len: int = SEQ_LEN, quick: bool = False,
               expansion: int = EXPANSION) -> dict:
    """Time plain forward, spliced forwards and encode alone on the same ids."""
    from torch_mi import HookSpec
    from torch_mi.dictionaries import SparseAutoencoder, splice

    layer = ours.num_layers // 2
    hook = f"blocks.{layer}.hook_resid_post"
    ids = _ids(seq_len, ours.vocab_size)
    x = ours.forward(ids, HookSpec().capture(hook))[hook]              # [1,S,D]
    d_in = x.shape[-1]
    with tempfile.TemporaryDirectory() as tmp:
        _write_sae(Path(tmp) / "sae", hook, d_in, expansion * d_in)
        sae = SparseAutoencoder.from_local(Path(tmp) / "sae")
    exact = splice(HookSpec(), sae, use_error_term=True)
    replaced = splice(HookSpec(), sae)
    captured = splice(HookSpec(), sae, use_error_term=True, capture=["acts_post"])
    plain_logits = ours.forward(ids).output()
    max_diff = float((ours.forward(ids, exact).output() - plain_logits).abs().max())
    t = time_calls({"plain": lambda: ours.forward(ids),
                    "splice_error_term": lambda: ours.forward(ids, exact),
                    "splice_replace": lambda: ours.forward(ids, replaced),
                    "splice_capture_acts": lambda: ours.forward(ids, captured),
                    "encode_only": lambda: sae.encode(x)},
                   _reps(seq_len, quick))
    return {"seq_len": seq_len, "layer": layer, "d_in": d_in, "d_sae": sae.d_sae,
            **{k: v.to_dict() for k, v in t.items()},
            "ratio": t["splice_error_term"].median / t["plain"].median,
            "max_abs_logit_diff_error_term": max_diff}


def target_rows(s: dict) -> list[tuple[str, str, str, bool | None]]:
    """Rows for the targets table (report.py)."""
    return [(f"SAE splice ({s['d_sae']} features at layer {s['layer']}, error term) / plain "
             f"forward ({s['seq_len']} tok)", f"{s['ratio']:.2f}x", "<= 1.3x",
             s["ratio"] <= 1.3 and s["max_abs_logit_diff_error_term"] < 1e-3)]


def markdown(s: dict) -> list[str]:
    ms = {k: s[k]["median"] * 1e3 for k in ("plain", "splice_error_term", "splice_replace",
                                             "splice_capture_acts", "encode_only")}
    return ["", "## SAE splice (issue 13)", "",
            f"Random SAELens-format SAE, d_in {s['d_in']}, d_sae {s['d_sae']} at "
            f"`blocks.{s['layer']}.hook_resid_post`, {s['seq_len']} tokens (ms, median): plain "
            f"forward {ms['plain']:.1f}, splice with error term {ms['splice_error_term']:.1f} "
            f"({s['ratio']:.2f}x), without {ms['splice_replace']:.1f}, with acts captured "
            f"{ms['splice_capture_acts']:.1f}, encode alone {ms['encode_only']:.1f}. Max "
            f"|logit diff| of the error-term splice vs plain: "
            f"{s['max_abs_logit_diff_error_term']:.1e}."]
