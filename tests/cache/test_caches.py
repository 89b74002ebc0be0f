"""Activation and attention caches: reference vectors, errors, and building from a forward."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.cache import ActivationCache, AttentionCache, FullActivationCache


def reference_attention() -> torch.Tensor:
    """The inventory's fixture [1, 2, 4, 4]: head 0 uniform 0.25, head 1 diagonal 0.7 / 0.1."""
    uniform = torch.full((4, 4), 0.25)
    diagonal = torch.full((4, 4), 0.1) + 0.6 * torch.eye(4)
    return torch.stack([uniform, diagonal]).unsqueeze(0)


# ---- AttentionCache -----------------------------------------------------------------------
def test_attention_reference_row_and_top1():
    cache = AttentionCache([reference_attention()])
    row = cache.attention_from_position(0, 0)
    torch.testing.assert_close(row, torch.tensor([0.475, 0.175, 0.175, 0.175]))
    assert row.dtype == torch.float32
    top = cache.top_attended_positions(0, 0, 1)
    assert top[0][0] == 0 and top[0][1] == pytest.approx(0.475)


def test_attention_column_and_ordering():
    pattern = reference_attention().clone()
    pattern[0, 1, 2] = torch.tensor([0.05, 0.6, 0.05, 0.3])  # head 1, query 2
    cache = AttentionCache.with_capacity(1)
    cache.push(pattern.half())  # read-outs are float32 whatever the stored dtype
    col = cache.attention_to_position(0, 1)
    expected = (pattern[0, 0, :, 1] + pattern[0, 1, :, 1]) / 2
    torch.testing.assert_close(col, expected, atol=1e-3, rtol=0)
    top = cache.top_attended_positions(0, 2, 3)
    assert [p for p, _ in top] == [1, 3, 0]  # 0.425, 0.275, then 0.15 tie: earlier first
    assert [w for _, w in top] == pytest.approx([0.425, 0.275, 0.15], abs=1e-3)


def test_top_k_larger_than_sequence_returns_all_and_zero_returns_none():
    cache = AttentionCache([reference_attention()])
    everything = cache.top_attended_positions(0, 3, 10)
    assert [p for p, _ in everything] == [3, 0, 1, 2]
    assert sum(w for _, w in everything) == pytest.approx(1.0)
    assert cache.top_attended_positions(0, 3, 0) == []
    with pytest.raises(mi.InputError, match="non-negative"):
        cache.top_attended_positions(0, 3, -1)


def test_attention_errors_name_the_valid_range():
    cache = AttentionCache([reference_attention(), reference_attention()])
    assert cache.n_layers() == len(cache) == 2 and not cache.is_empty()
    assert len(cache.patterns()) == 2
    with pytest.raises(mi.HookError, match=r"valid layers are 0\.\.1"):
        cache.get_layer(2)
    with pytest.raises(mi.HookError, match=r"valid positions are 0\.\.3"):
        cache.attention_from_position(0, 4)
    with pytest.raises(mi.HookError, match=r"valid positions are 0\.\.3"):
        cache.attention_to_position(1, -1)
    with pytest.raises(mi.HookError, match="empty"):
        AttentionCache().get_layer(0)
    with pytest.raises(mi.InputError, match="seq_q, seq_k"):
        cache.push(torch.zeros(2, 4, 4))


# ---- ActivationCache / FullActivationCache --------------------------------------------------
def test_activation_cache_basics():
    vectors = [torch.arange(3.0), torch.arange(3.0) * -1]
    cache = ActivationCache.with_capacity(2)
    assert cache.is_empty()
    for v in vectors:
        cache.push(v)
    assert cache.n_layers() == 2 and not cache.is_empty()
    torch.testing.assert_close(cache.get_layer(1), vectors[1])
    assert cache.to_f32_lists() == [[0.0, 1.0, 2.0], [-0.0, -1.0, -2.0]]
    assert [t.tolist() for t in cache.activations()] == [v.tolist() for v in vectors]
    with pytest.raises(mi.HookError, match=r"valid layers are 0\.\.1"):
        cache.get_layer(5)
    with pytest.raises(mi.InputError, match=r"push t\[0, -1\]"):
        cache.push(torch.zeros(1, 3))


def test_full_activation_cache_positions_and_errors():
    layer0 = torch.arange(12.0).reshape(4, 3)
    cache = FullActivationCache([layer0, layer0 + 100])
    assert cache.n_layers() == 2 and cache.seq_len() == 4
    torch.testing.assert_close(cache.get_position(1, 2), torch.tensor([106.0, 107.0, 108.0]))
    with pytest.raises(mi.HookError, match=r"valid positions are 0\.\.3"):
        cache.get_position(0, 4)
    with pytest.raises(mi.HookError, match=r"valid layers are 0\.\.1"):
        cache.get_position(2, 0)
    with pytest.raises(mi.HookError, match="empty"):
        FullActivationCache().seq_len()
    with pytest.raises(mi.InputError, match="same sequence length"):
        cache.push(torch.zeros(5, 3))


# ---- built from a real forward -------------------------------------------------------------
@pytest.fixture(scope="module")
def forward(loaded, tiny_models):
    model = loaded["llama"]
    layers = range(model.num_layers)
    spec = mi.HookSpec()
    for layer in layers:
        spec.capture(mi.HookPoint.ResidPost(layer), mi.HookPoint.AttnPattern(layer))
    return model, model.forward(tiny_models["llama"].input_ids, spec)


def test_caches_from_a_forward_hold_the_hook_tensors(forward):
    model, hooks = forward
    n = model.num_layers
    last = ActivationCache.from_hook_cache(hooks, range(n), batch_index=1)
    full = FullActivationCache.from_hook_cache(hooks, [f"blocks.{i}.hook_resid_post" for i in range(n)])
    attn = AttentionCache.from_hook_cache(hooks, [mi.HookPoint.AttnPattern(i) for i in range(n)])
    for layer in range(n):
        resid = hooks[mi.HookPoint.ResidPost(layer)]  # [2, S, D]
        pattern = hooks[mi.HookPoint.AttnPattern(layer)]  # [2, H, S, S]
        torch.testing.assert_close(last.get_layer(layer), resid[1, -1], rtol=0, atol=0)
        torch.testing.assert_close(full.get_layer(layer), resid[0], rtol=0, atol=0)
        torch.testing.assert_close(full.get_position(layer, 5), resid[0, 5], rtol=0, atol=0)
        torch.testing.assert_close(attn.get_layer(layer), pattern, rtol=0, atol=0)
        query = 7
        row = attn.attention_from_position(layer, query)
        torch.testing.assert_close(row, pattern[0, :, query].mean(dim=0))
        torch.testing.assert_close(row[query + 1:], torch.zeros(row.shape[0] - query - 1))  # causal
        torch.testing.assert_close(attn.attention_to_position(layer, 0), pattern[0, :, :, 0].mean(dim=0))
    assert full.seq_len() == hooks.output().shape[1]


def test_from_hook_cache_errors(forward):
    _, hooks = forward
    with pytest.raises(mi.HookError, match="not captured"):
        FullActivationCache.from_hook_cache(hooks, [mi.HookPoint.MlpOut(0)])
    with pytest.raises(mi.InputError, match="batch_index 2"):
        ActivationCache.from_hook_cache(hooks, [0], batch_index=2)
    with pytest.raises(mi.HookError, match="expected a 3-D"):
        FullActivationCache.from_hook_cache(hooks, [mi.HookPoint.AttnPattern(0)])
