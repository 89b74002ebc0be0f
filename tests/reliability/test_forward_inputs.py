"""Reliability catalogue: hostile inputs to ``forward`` and its helpers.

Each case is one bad input; it must raise the exact torch-mi error class with a message
that names the offending argument, and it must never be truncated or guessed into a
silently wrong result.
"""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly

GOOD = [[5, 6, 7, 8]]

# (case id, bad input_ids, error message must match)
BAD_IDS = [
    ("float_list", [[1.7, 5.9]], r"input_ids must hold integer token ids.*float32.*1\.7 at \[0, 0\]"),
    ("float_whole_numbers", [[1.0, 5.0]], r"input_ids must hold integer token ids.*floats are refused"),
    ("float_tensor", torch.tensor([[1.5, 2.0]]), r"input_ids must hold integer token ids.*float32"),
    ("mixed_int_float", [3, 4.5], r"input_ids must hold integer token ids"),
    ("bool_tensor", torch.tensor([[True, False]]), r"input_ids must hold integer token ids.*bool"),
    ("complex_tensor", torch.tensor([[1 + 2j]]), r"input_ids must hold integer token ids.*complex"),
    ("text_instead_of_ids", "hello", r"input_ids must be token ids.*got str.*model.encode"),
    ("bytes_instead_of_ids", b"hello", r"input_ids must be token ids.*got bytes"),
    ("none", None, r"input_ids must be token ids.*got NoneType"),
    ("dict", {"ids": [1, 2]}, r"input_ids must be token ids.*got dict"),
    ("ragged_rows", [[1, 2, 3], [4, 5]], r"input_ids must be token ids.*equal length"),
    ("string_entries", [["a", "b"]], r"input_ids must be token ids"),
    ("int_beyond_int64", [[2 ** 70]], r"input_ids must be token ids"),
    ("three_dims", torch.ones(1, 2, 3, dtype=torch.long), r"input_ids must be \[batch, seq\].*\[1, 2, 3\]"),
    ("empty_list", [], r"empty input: input_ids has shape \[0\]"),
    ("empty_rows", torch.zeros(2, 0, dtype=torch.long), r"empty input: input_ids has shape \[2, 0\]"),
    ("vocab_overflow", [[3, 256]], r"token id 256 at position \[0, 1\] is outside the vocabulary \(0..255\)"),
    ("negative_id", torch.tensor([[-5, 3]]), r"token id -5 at position \[0, 0\]"),
]


@pytest.mark.parametrize(("bad", "match"), [c[1:] for c in BAD_IDS], ids=[c[0] for c in BAD_IDS])
def test_bad_input_ids_are_input_errors(loaded, bad, match):
    with raises_exactly(mi.InputError, match=match):
        loaded["llama"].forward(bad)


def test_whole_number_floats_are_not_silently_truncated_to_other_tokens(loaded):
    """[[1.7, 5.9]] used to run as [[1, 5]]: it must fail, not give those logits."""
    with raises_exactly(mi.InputError, match="floats are refused, not truncated"):
        loaded["llama"].forward([[1.7, 5.9]])


BAD_CALLS = [
    ("hooks_dict", dict(hooks={"blocks.0.hook_resid_pre": None}), mi.HookError,
     r"hooks must be a HookSpec \(or None\), got dict.*mi.HookSpec\(\)"),
    ("hooks_list", dict(hooks=["blocks.0.hook_resid_pre"]), mi.HookError,
     r"hooks must be a HookSpec \(or None\), got list"),
    ("hooks_string", dict(hooks="blocks.0.hook_resid_pre"), mi.HookError,
     r"hooks must be a HookSpec \(or None\), got str"),
    ("state_dict", dict(state={}), mi.InputError,
     r"state must be a KVCache from model.make_state\(\), got dict"),
    ("last_logits_only_str", dict(last_logits_only="yes"), mi.InputError,
     r"last_logits_only must be True or False, got str"),
    ("allow_long_context_int", dict(allow_long_context=1), mi.InputError,
     r"allow_long_context must be True or False, got 1"),
    ("mask_ragged", dict(attention_mask=[[1, 1, 1], [1]]), mi.InputError,
     r"attention_mask must be a \[batch, positions\] tensor"),
    ("mask_wrong_shape", dict(attention_mask=torch.ones(1, 3)), mi.InputError,
     r"attention_mask has shape \[1, 3\], expected \[1, 4\]"),
    ("mask_values", dict(attention_mask=torch.tensor([[1, 2, 1, 1]])), mi.InputError,
     r"attention_mask must contain only 0 and 1, got values \[1, 2\]"),
    ("mask_nan", dict(attention_mask=torch.tensor([[1.0, float("nan"), 1.0, 1.0]])), mi.InputError,
     r"attention_mask must contain only 0 and 1"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), [c[1:] for c in BAD_CALLS],
                         ids=[c[0] for c in BAD_CALLS])
def test_bad_forward_arguments(loaded, kwargs, error, match):
    with raises_exactly(error, match=match):
        loaded["llama"].forward(GOOD, **kwargs)


def test_sequence_beyond_the_context_is_refused_with_the_rope_scaling_that_would_fit(loaded):
    model = loaded["llama"]  # max_position_embeddings = 256
    ids = torch.randint(3, 256, (1, 300), generator=torch.Generator().manual_seed(0))
    with raises_exactly(mi.InputError, match=r"reaches 300 positions.*context of 256.*"
                                             r"allow_long_context=True.*'factor': 2\.0.*512"):
        model.forward(ids)
    out = model.forward(ids, allow_long_context=True).output()  # the caller opted in
    assert out.shape == (1, 300, 256) and torch.isfinite(out).all()


def test_context_counts_cached_positions(loaded):
    model = loaded["llama"]
    state = model.make_state()
    model.forward(torch.full((1, 250), 9), state=state)
    with raises_exactly(mi.InputError, match=r"reaches 260 positions \(cached \+ new\)"):
        model.forward(torch.full((1, 10), 9), state=state)
    assert state.seq_len() == 250  # the refused step left the cache alone


def test_dynamic_rope_has_no_context_limit(tiny_models, loaded):
    model = loaded["llama_dynamic"]  # max_position_embeddings = 12, dynamic NTK extends it
    assert model.backend.context_limit() is None
    assert model.forward(tiny_models["llama_dynamic"].input_ids).output().shape[1] == 20


PROJECT = [
    ("wrong_width", torch.zeros(3, 63), r"project_to_vocab needs a residual \[\.\.\., 64\].*\[3, 63\]"),
    ("scalar", torch.tensor(1.0), r"project_to_vocab needs a residual \[\.\.\., 64\].*got shape \[\]"),
    ("integer_dtype", torch.zeros(2, 64, dtype=torch.long), r"floating-point residual.*torch.int64"),
    ("not_a_tensor", [0.0] * 64, r"project_to_vocab needs a residual tensor \[\.\.\., 64\], got list"),
]


@pytest.mark.parametrize(("hidden", "match"), [c[1:] for c in PROJECT], ids=[c[0] for c in PROJECT])
def test_project_to_vocab_refuses_the_wrong_residual(loaded, hidden, match):
    with raises_exactly(mi.InputError, match=match):
        loaded["llama"].project_to_vocab(hidden)


@pytest.mark.parametrize("token_id", [1.9, "3", True, 256], ids=["float", "str", "bool", "vocab"])
def test_embedding_vector_refuses_non_token_ids(loaded, token_id):
    with raises_exactly(mi.InputError, match="input_ids|token id"):
        loaded["llama"].embedding_vector(token_id)


def test_kv_cache_of_batch_two_reused_at_batch_one(tiny_models, loaded):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids  # [2, 20]
    state = model.make_state()
    model.forward(ids, state=state)
    with raises_exactly(mi.InputError, match=r"state: this KVCache holds a batch of 2 sequence\(s\), "
                                             r"the input_ids have batch 1"):
        model.forward(ids[:1, :1], state=state)
    assert state.seq_len() == 20 and state.seen_tokens == 20


def test_kv_cache_from_another_model(loaded):
    llama, gemma = loaded["llama"], loaded["gemma"]  # Hkv/head_dim differ (2x16 vs 1x32)
    state = gemma.make_state()
    gemma.forward(GOOD, state=state)
    with raises_exactly(mi.InputError, match=r"state: layer 0 of this KVCache holds keys "
                                             r"\[B, 1, S, 32\].*needs \[B, 2, S, 16\]"):
        llama.forward([[9]], state=state)


def test_kv_cache_with_the_wrong_number_of_layers(loaded):
    with raises_exactly(mi.InputError, match=r"state: this KVCache has 3 layers, the model has 2"):
        loaded["llama"].forward(GOOD, state=mi.KVCache(3))
