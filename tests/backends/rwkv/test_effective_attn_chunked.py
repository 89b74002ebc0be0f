"""The chunked effective attention over several chunks (the model-level tests use short
sequences): its unnormalised weights mix the values exactly as the token-by-token WKV
recurrence does (``wkv.py``, itself checked against the ``rwkv`` package), in fp64, with
and without a state knockout / steering ``write_scale``; and the chunked and the exact
(fallback) paths agree."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torch_mi.backends.rwkv import effective_attn
from torch_mi.backends.rwkv.wkv import wkv6, wkv7

B, S, H, D = 2, 150, 2, 8  # 150 positions: several chunks for both versions


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    log_w = -torch.exp(draw(B, S, H, D) * 0.5 - 1.5)  # RWKV-6-like log-decays
    return {"r": draw(B, S, H, D), "k": draw(B, S, H, D), "v": draw(B, S, H, D),
            "u": draw(H, D), "log_w": log_w,
            "w7": torch.exp(-0.6065 * torch.sigmoid(draw(B, S, H, D))),
            "kk": F.normalize(draw(B, S, H, D), dim=-1),
            "a": torch.sigmoid(draw(B, S, H, D))}


def _raw(monkeypatch, fn, *args) -> torch.Tensor:
    """α_raw [B,H,S,S] (before the ReLU/L1 normalisation)."""
    seen = {}
    monkeypatch.setattr(effective_attn, "normalise", lambda raw: seen.setdefault("raw", raw))
    fn(*args)
    monkeypatch.undo()
    return seen["raw"]


SCALES = [None, torch.tensor([0.0 if i in (3, 70) else (2.5 if i == 100 else 1.0)
                              for i in range(S)])]


@pytest.mark.parametrize("write_scale", SCALES, ids=["plain", "knockout+steering"])
def test_v6_weights_reproduce_the_recurrence(monkeypatch, write_scale):
    x = _inputs(0)
    decay = x["log_w"].exp()
    raw = _raw(monkeypatch, effective_attn.effective_attn_v6, x["r"], x["k"], decay, x["u"],
               write_scale, x["log_w"])
    y, _ = wkv6(x["r"], x["k"], x["v"], decay, x["u"], torch.zeros(B, H, D, D,
                                                                   dtype=torch.float64),
                write_scale)
    torch.testing.assert_close(torch.einsum("bhts,bshd->bthd", raw, x["v"]), y,
                               rtol=1e-9, atol=1e-9)
    assert torch.equal(torch.triu(raw, 1), torch.zeros_like(raw))


@pytest.mark.parametrize("write_scale", SCALES, ids=["plain", "knockout+steering"])
def test_v7_weights_reproduce_the_recurrence(monkeypatch, write_scale):
    x = _inputs(1)
    args = (x["r"], x["w7"], x["k"], x["kk"], x["a"])
    raw = _raw(monkeypatch, effective_attn.effective_attn_v7, x["r"], x["w7"], x["k"],
               x["kk"], x["a"], write_scale)
    y, _ = wkv7(args[0], args[1], args[2], x["v"], args[3], args[4],
                torch.zeros(B, H, D, D, dtype=torch.float64), write_scale)
    torch.testing.assert_close(torch.einsum("bhts,bshd->bthd", raw, x["v"]), y,
                               rtol=1e-9, atol=1e-9)
    assert torch.equal(torch.triu(raw, 1), torch.zeros_like(raw))


def test_chunked_and_exact_paths_agree_in_fp32(monkeypatch):
    """The fp32 result of the chunked path equals the exact fallback (forced) to fp32
    rounding, for both versions."""
    x = {name: t.float() for name, t in _inputs(2).items()}
    v6 = (x["r"], x["k"], x["log_w"].exp(), x["u"], None, x["log_w"])
    v7 = (x["r"], x["w7"], x["k"], x["kk"], x["a"])
    assert effective_attn.prepare6(*v6[:4], None) is not None  # both take the chunked path
    assert effective_attn.prepare7(*v7, None) is not None
    chunked = effective_attn.effective_attn_v6(*v6), effective_attn.effective_attn_v7(*v7)
    monkeypatch.setattr(effective_attn, "prepare6", lambda *args: None)
    monkeypatch.setattr(effective_attn, "prepare7", lambda *args: None)
    exact = effective_attn.effective_attn_v6(*v6), effective_attn.effective_attn_v7(*v7)
    for got, want in zip(chunked, exact, strict=True):
        assert got.dtype == torch.float32 and got.shape == (B, H, S, S)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-6)
