"""Reliability catalogue: looped forwards (a layer range run several times) refuse specs that
would be truncated or would silently poison every extra pass."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from torch_mi.backends.looped import LoopSpec, forward_looped

IDS = [[5, 6, 7, 8]]

LOOPS = [
    ("depth_float", lambda: LoopSpec(0, 1).with_depth(2.5), r"LoopSpec.depth must be an int, got float 2\.5"),
    ("depth_zero", lambda: LoopSpec(0, 1).with_depth(0), r"loop depth must be >= 1, got 0"),
    ("start_str", lambda: LoopSpec("0", 1), r"LoopSpec.loop_start must be an int, got str"),
    ("end_beyond_layers", lambda: LoopSpec(0, 5), r"loop 0..=5 outside the model's 2 layers"),
    ("feedback_position_float", lambda: LoopSpec(0, 1).add_feedback(1.5, torch.ones(64)),
     r"feedback position must be an int, got 1\.5"),
    ("feedback_vector_nan", lambda: LoopSpec(0, 1).add_feedback(1, torch.full((64,), float("nan"))),
     r"feedback vector holds NaN or inf values"),
    ("feedback_vector_list", lambda: LoopSpec(0, 1).add_feedback(1, [0.0] * 64),
     r"feedback vector must be a float tensor \[D\], got list"),
    ("feedback_strength_nan", lambda: LoopSpec(0, 1).add_feedback(1, torch.ones(64), float("nan")),
     r"feedback strength must be a finite number, got nan"),
    ("feedback_strength_huge_int", lambda: LoopSpec(0, 1).add_feedback(1, torch.ones(64), 10 ** 400),
     r"feedback strength must be a finite number"),
    ("feedback_wrong_width", lambda: LoopSpec(0, 1).add_feedback(1, torch.ones(63)),
     r"feedback vector has 63 elements, the model's hidden size is 64"),
]


@pytest.mark.parametrize(("spec", "match"), [c[1:] for c in LOOPS], ids=[c[0] for c in LOOPS])
def test_bad_loop_specs_are_intervention_errors(loaded, spec, match):
    with raises_exactly(mi.InterventionError, match=match):
        forward_looped(loaded["llama"], IDS, None, spec())


def test_looped_forward_refuses_float_ids(loaded):
    with raises_exactly(mi.InputError, match=r"input_ids must hold integer token ids"):
        forward_looped(loaded["llama"], [[5.5, 6.0]], None, LoopSpec(0, 1))


def test_looped_forward_refuses_a_hooks_dict(loaded):
    with raises_exactly(mi.HookError, match=r"hooks must be a HookSpec \(or None\), got dict"):
        forward_looped(loaded["llama"], IDS, {"hook_embed": 1}, LoopSpec(0, 1))


def test_cache_membership_of_an_empty_string_is_false(loaded):
    cache = loaded["llama"].forward(IDS, mi.HookSpec().capture("hook_embed"))
    assert "" not in cache and 123 not in cache and "hook_embed" in cache
