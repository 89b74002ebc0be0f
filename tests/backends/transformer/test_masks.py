"""Seed mask helpers and the per-call mask builder."""

from __future__ import annotations

import torch

import torch_mi as mi
from torch_mi.backends.transformer.masks import build_layer_mask

NEG = float("-inf")


def test_causal_mask_values_and_cache():
    mi.clear_mask_caches()
    mask = mi.create_causal_mask(3, "cpu", torch.float32)
    expected = torch.tensor([[0, NEG, NEG], [0, 0, NEG], [0, 0, 0]])
    assert mask.shape == (1, 1, 3, 3)
    assert torch.equal(mask[0, 0], expected)
    assert mi.create_causal_mask(3, "cpu", torch.float32) is mask
    mi.clear_mask_caches()
    assert mi.create_causal_mask(3, "cpu", torch.float32) is not mask


def test_generation_mask():
    single = mi.create_generation_mask(1, 5, 4)
    assert torch.equal(single, torch.zeros(1, 1, 1, 5))
    mask = mi.create_generation_mask(2, 5, 3)
    assert torch.equal(mask[0, 0], torch.tensor([[0, 0, 0, 0, NEG], [0, 0, 0, 0, 0]]))


def test_sliding_window_keeps_w_keys_including_the_query():
    mask = build_layer_mask(6, 0, 3, None, torch.device("cpu"))
    allowed = mask.allowed[0, 0].int()
    assert allowed[5].tolist() == [0, 0, 0, 1, 1, 1]
    assert allowed[1].tolist() == [1, 1, 0, 0, 0, 0]


def test_padding_hides_keys_and_decode_step_sees_everything():
    pad = torch.tensor([[0, 1, 1], [1, 1, 1]])
    mask = build_layer_mask(3, 0, None, pad, torch.device("cpu"))
    assert mask.allowed[0, 0, 2].tolist() == [False, True, True]
    assert not mask.allowed[0, 0, 0].any()  # a padded query sees nothing
    assert build_layer_mask(1, 7, None, None, torch.device("cpu")).kind == "none"
    assert build_layer_mask(5, 0, None, None, torch.device("cpu")).kind == "causal"
