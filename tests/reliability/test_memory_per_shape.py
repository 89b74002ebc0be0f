"""Bounded memory per shape: oneDNN caches ~0.6 MB per distinct (rows, in, out) linear shape
and never returns it, so the transformer's Linear pads its rows to a few bucket sizes.

* The padding never changes a result: every row is bit-identical to the unpadded oneDNN call
  (or to F.linear, where padding would cost more than it saves: ``padded_rows``).
* 600 distinct token counts through SmolLM2's own linear modules grow RSS by < 80 MB (the four
  block projections; see ``test_600_distinct_token_counts_through_smollm2_linears``).
* Real forwards of the embedded SmolLM2 at 50 distinct lengths grow RSS by < 100 MB
  (~156 MB without the buckets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_mi.backends.transformer.layers import (
    PAD_BYTES_LIMIT,
    SMALL_ROWS,
    Linear,
    bucket_rows,
    linear_rows,
    onednn_linear_available,
    padded_rows,
)

needs_onednn = pytest.mark.skipif(not onednn_linear_available(),
                                  reason="oneDNN's fused linear is not available in this build")


def test_bucket_sizes_for_lengths_up_to_600():
    assert sorted({bucket_rows(n) for n in range(1, 601)}) == [
        1, 2, 4, 8, 16, 20, 26, 32, 40, 52, 64, 80, 104, 128, 160, 208, 256, 320, 416, 512, 640]
    assert [bucket_rows(n) for n in (1, 2, 3, 5, 9, 16, 17, 21, 33, 600, 4097)] == [
        1, 2, 4, 8, 16, 16, 20, 26, 40, 640, 5120]


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.integers(min_value=1, max_value=1 << 40))
def test_a_bucket_holds_its_rows_with_at_most_30_percent_padding(rows):
    bucket = bucket_rows(rows)
    assert bucket >= rows and bucket_rows(bucket) == bucket  # a bucket maps to itself
    assert bucket <= max(SMALL_ROWS, rows * 1.3)
    assert bucket_rows(rows + 1) >= bucket  # monotone: a longer input never gets less room


def _reference(x: torch.Tensor, layer: Linear) -> torch.Tensor:
    """What the layer must return: the unpadded oneDNN call it made before buckets existed,
    or F.linear where ``padded_rows`` refuses to pad."""
    rows = x.numel() // x.shape[-1]
    if padded_rows(rows, layer.out_features, 4) is None:
        return torch.nn.functional.linear(x, layer.weight, layer.bias)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), layer.weight, layer.bias, "none",
                                              [], "")


SMOLLM2_SHAPES = [(576, 960), (576, 576), (576, 3072), (1536, 576), (576, 49152)]


def _layer(n_in: int, n_out: int, g: torch.Generator) -> Linear:
    layer = Linear(n_in, n_out, bias=n_out == 960).requires_grad_(False)
    layer.weight.copy_(torch.randn(n_out, n_in, generator=g) / n_in ** 0.5)
    if layer.bias is not None:
        layer.bias.copy_(torch.randn(n_out, generator=g))
    return layer


@needs_onednn
@pytest.mark.parametrize(("n_in", "n_out"), SMOLLM2_SHAPES)
def test_padded_rows_are_bit_identical_to_the_unpadded_call(n_in, n_out):
    g = torch.Generator().manual_seed(n_in + n_out)
    layer = _layer(n_in, n_out, g)
    rows = ([*range(1, 70), 100, 129, 300, 513] if n_out < 49152
            else [2, 3, 17, 41, 107, 129, 600])
    with torch.inference_mode():
        for n in rows:
            x = torch.randn(1, n, n_in, generator=g)
            out = layer(x)
            assert out.shape == (1, n, n_out) and out.is_contiguous()
            assert torch.equal(out, _reference(x, layer)), f"{n} rows differ"
        # batch x seq rows, and a non-contiguous input (a transposed view)
        x = torch.randn(7, 3, n_in, generator=g).transpose(0, 1)
        assert torch.equal(layer(x), _reference(x, layer))


@needs_onednn
def test_padding_rows_never_reach_the_output():
    """A small output is a view of the padded buffer, holding only the caller's rows."""
    layer = _layer(16, 8, torch.Generator().manual_seed(1))
    out = layer(torch.randn(1, 5, 16))  # 5 rows -> bucket 8
    assert out.shape == (1, 5, 8) and bool(torch.isfinite(out).all())
    assert out.untyped_storage().nbytes() == 8 * 8 * 4  # padded buffer, sliced to 5 rows


def test_where_padding_is_taken():
    assert padded_rows(33, 49152, 4) == 40  # <= 64 rows: weight-bound, padding is cheap
    assert padded_rows(600, 49152, 4) == 640  # 40 rows: < 1/8 and 7.9 MB < 8 MiB
    assert padded_rows(129, 960, 4) is None  # 129 -> 160 is 24% more work: F.linear
    assert padded_rows(2000, 960, 4) == 2048
    assert padded_rows(2000, 49152, 4) is None  # 48 rows x 49152 logits = 9.4 MB


@needs_onednn
def test_linear_rows_tells_memory_plans_the_buffer_size():
    assert linear_rows(600, 49152, torch.float32, "cpu") == 640
    assert linear_rows(513, 49152, torch.float32, "cpu") == 513  # F.linear: no padding
    assert linear_rows(600, 49152, torch.bfloat16, "cpu") == 600  # lower precision: F.linear
    assert linear_rows(600, 49152, torch.float32, "meta") == 600  # not the CPU path


@needs_onednn
def test_a_refused_padding_takes_f_linear_with_exact_storage():
    """513 rows would pad to 640 (25% more work): F.linear instead, and the output holds
    exactly its own bytes."""
    layer = _layer(576, 49152, torch.Generator().manual_seed(2))
    x = torch.randn(1, 513, 576)
    with torch.inference_mode():
        out = layer(x)
    assert out.untyped_storage().nbytes() == 513 * 49152 * 4
    assert torch.equal(out, torch.nn.functional.linear(x, layer.weight))


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.integers(min_value=1, max_value=1 << 24), st.integers(min_value=1, max_value=1 << 18))
def test_padding_is_bounded_in_bytes_and_in_work(rows, out_features):
    padded = padded_rows(rows, out_features, 4)
    extra = bucket_rows(rows) - rows
    if padded is None:
        assert extra * out_features * 4 > PAD_BYTES_LIMIT or (rows > 64 and extra * 8 > rows)
    else:
        assert padded == bucket_rows(rows) and extra * out_features * 4 <= PAD_BYTES_LIMIT
        assert rows <= 64 or padded <= rows * 1.125


PRELUDE = r"""
import json, psutil, torch
torch.set_num_threads(2)
import torch_mi as mi
from torch_mi.backends.transformer.layers import Linear
from torch_mi.memory import fix_malloc_mmap_threshold

assert fix_malloc_mmap_threshold()  # freed activations leave RSS: what stays is retained
model = mi.MIModel.from_pretrained(device="cpu")
proc, g = psutil.Process(), torch.Generator().manual_seed(0)
op = torch.ops.mkldnn._linear_pointwise
with torch.inference_mode():  # one-off state, before the first reading
    op(torch.randn(3, 64), torch.randn(64, 64), None, "none", [], "")  # oneDNN, another shape
    for rows in (150, 300, 600, 1200):  # MKL's buffer pool: ~48 MB once, filled by its
        # first large GEMMs (F.linear, which Linear falls back to past the padding limit)
        torch.nn.functional.linear(torch.randn(rows, 576), model.backend.unembed.weight)
"""

CHILD_LINEARS = PRELUDE + r"""
layers = {}
for module in model.backend.modules():
    if isinstance(module, Linear) and module.out_features != model.vocab_size:
        layers.setdefault((module.in_features, module.out_features), module)
with torch.inference_mode():
    # Positive control: 40 raw, unbucketed row counts on a SmolLM2 weight must show up in RSS.
    w = next(iter(layers.values())).weight
    before = proc.memory_info().rss
    for rows in range(1001, 1041):
        op(torch.randn(rows, w.shape[1], generator=g), w, None, "none", [], "")
    control = proc.memory_info().rss - before
    start = proc.memory_info().rss
    for length in range(1, 601):
        for layer in layers.values():
            layer(torch.randn(1, length, layer.in_features, generator=g))
    growth = proc.memory_info().rss - start
print(json.dumps({"shapes": sorted(layers), "control": control, "growth": growth}))
"""


def _child(script: str, *args: str, timeout: float) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_onednn
def test_600_distinct_token_counts_through_smollm2_linears():
    """What it measures: in a fresh process, RSS before and after calling each of SmolLM2's
    four block projections (QKV 576->960, O 576->576, gate-up 576->3072, down 1536->576: the
    modules of the loaded model, shared in shape by all 30 layers) on [1, L, in] inputs for
    L = 1..600, so oneDNN sees 600 distinct token counts per shape, as it would from 600
    prompt lengths. The unembedding (the fifth shape, 576->49152) takes the same code path
    but would cost ~75 s of GEMMs at 600 lengths, so it is in the end-to-end test below
    (all five shapes at 600 lengths, measured once: +67 MB). glibc is told to mmap every
    block >= 64 KB (``fix_malloc_mmap_threshold``), so freed inputs and outputs leave RSS
    and what is measured is what stays allocated. Before the buckets this grew by ~470 MB
    (~1.5 GB without the mmap threshold); now ~55 MB. The bound 80 MB is the issue's 100 MB
    scaled to 4/5 shapes. The control (40 unbucketed raw calls, ~24 MB) proves that RSS sees
    the per-shape growth."""
    result = _child(CHILD_LINEARS, timeout=300)
    mb = 1 << 20
    assert [tuple(s) for s in result["shapes"]] == [(576, 576), (576, 960), (576, 3072),
                                                    (1536, 576)]
    assert result["control"] > 12 * mb, result  # ~0.6 MB x 40 when the cache grows
    assert result["growth"] < 80 * mb, f"RSS grew {result['growth'] / mb:.1f} MB"


CHILD_FORWARDS = PRELUDE + r"""
lengths = [*range(2, 47), 100, 150, 200, 250, 300]
with torch.inference_mode():
    model.forward(torch.full((1, 1), 42))  # first call: RoPE tables, allocator
    start = proc.memory_info().rss
    for n in lengths:
        ids = (torch.arange(n) * 7919 % 49000 + 100)[None]
        assert torch.isfinite(model.forward(ids).output()).all()
    growth = proc.memory_info().rss - start
print(json.dumps({"lengths": len(set(lengths)), "growth": growth}))
"""


@needs_onednn
def test_real_forwards_at_50_distinct_lengths_stay_bounded():
    """End to end: full forwards (logits for every position, so the unembedding runs at every
    length too) of the embedded SmolLM2 at 50 distinct lengths from 2 to 300 tokens, with the
    same mmap threshold. Without buckets each new length kept ~3 MB (~156 MB here); with them
    the lengths make 14 bucket shapes (~43 MB)."""
    result = _child(CHILD_FORWARDS, timeout=300)
    assert result["lengths"] == 50
    assert result["growth"] < 100 * (1 << 20), f"RSS grew {result['growth'] / (1 << 20):.1f} MB"
