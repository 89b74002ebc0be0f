"""Reliability catalogue: text in and out (tokenizer, character positions) and the text-level
helpers of the analyses. Floats are refused, never truncated; empty targets are refused,
never silently resolved to some token."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from torch_mi.interp import KnockoutSpec, SteeringSpec
from torch_mi.interp.results import LogitComparison
from torch_mi.interp.vectors import steering_vector_hooks
from torch_mi.positions import EncodingWithOffsets, convert_positions
from torch_mi.tokenizer import pad_batch


@pytest.fixture
def tok(loaded):
    return loaded["llama"].tokenizer


TOKENIZER = [
    ("decode_float", lambda t: t.decode([1.9]), r"decode needs int token ids; entry 0 is float 1\.9"),
    ("decode_float_after_ints", lambda t: t.decode([5, 6, 7.0]), r"entry 2 is float 7\.0"),
    ("decode_float_tensor", lambda t: t.decode(torch.tensor([1.9])), r"tensor of dtype torch\.float32"),
    ("decode_bool", lambda t: t.decode([True]), r"entry 0 is bool True"),
    ("decode_str", lambda t: t.decode("abc"), r"decode needs a list of int token ids, got str"),
    ("decode_none", lambda t: t.decode(None), r"decode needs a list of int token ids, got NoneType"),
    ("decode_nested", lambda t: t.decode([[1, 2]]), r"entry 0 is list"),
    ("decode_2d_tensor", lambda t: t.decode(torch.ones(2, 2, dtype=torch.long)),
     r"decode needs a flat list of ids, got a tensor of shape \[2, 2\]"),
    ("decode_out_of_vocab", lambda t: t.decode([5, 300]), r"token ids \[300\] are outside the vocabulary"),
    ("decode_token_float", lambda t: t.decode_token(2.5), r"entry 0 is float 2\.5"),
    ("id_to_token_float", lambda t: t.id_to_token(2.5), r"entry 0 is float 2\.5"),
    ("encode_none", lambda t: t.encode(None), r"encode needs a str, got NoneType"),
    ("encode_bytes", lambda t: t.encode(b"abc"), r"encode needs a str, got bytes"),
    ("encode_batch_str", lambda t: t.encode_batch("abc"),
     r"encode_batch needs a non-empty list of strings, got str"),
    ("encode_batch_empty", lambda t: t.encode_batch([]), r"encode_batch needs a non-empty list"),
    ("encode_batch_int_entry", lambda t: t.encode_batch(["a", 3]), r"encode needs a str, got int"),
    ("encode_batch_side", lambda t: t.encode_batch(["a"], padding_side="middle"),
     r"padding_side must be 'left' or 'right', got 'middle'"),
    ("find_token_empty", lambda t: t.find_token_id(""), r"find_token_id needs a non-empty word, got ''"),
    ("find_token_none", lambda t: t.find_token_id(None), r"find_token_id needs a non-empty word, got None"),
    ("pad_batch_no_rows", lambda t: pad_batch([], 0), r"pad_batch needs at least one row"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in TOKENIZER], ids=[c[0] for c in TOKENIZER])
def test_bad_tokenizer_calls_are_tokenizer_errors(tok, call, match):
    with raises_exactly(mi.TokenizerError, match=match):
        call(tok)


def test_decode_of_a_float_is_not_the_truncated_token(tok):
    """decode([1.9]) used to decode token 1 (BOS): it must fail instead."""
    with raises_exactly(mi.TokenizerError, match="floats are refused, not truncated"):
        tok.decode([1.9])
    assert tok.decode([1]) == "<s>"  # the int still decodes


ENCODING = EncodingWithOffsets([1, 104, 105], ["<s>", "h", "i"], [(0, 0), (0, 1), (1, 2)])
POSITIONS = [
    ("char_to_token_float", lambda: ENCODING.char_to_token(1.5),
     r"char_pos must be an int position, got float 1\.5"),
    ("char_to_token_str", lambda: ENCODING.char_to_token("1"), r"char_pos must be an int position, got str"),
    ("char_to_token_fuzzy_float", lambda: ENCODING.char_to_token_fuzzy(0.5),
     r"char_pos must be an int position"),
    ("char_to_token_start_bool", lambda: ENCODING.char_to_token_start(True),
     r"char_pos must be an int position, got bool"),
    ("char_range_float_end", lambda: ENCODING.char_range_to_tokens(0, 1.5),
     r"end must be an int position, got float"),
    ("token_to_char_range_float", lambda: ENCODING.token_to_char_range(1.0),
     r"token_idx must be an int position"),
    ("label_spans_bad_span", lambda: ENCODING.label_spans([("x", 3)]),
     r"a span must be \(start, end\) or a range, got 3"),
    ("label_spans_float_span", lambda: ENCODING.label_spans([("x", (0.5, 2))]),
     r"span start must be an int position"),
    ("convert_float_position", lambda: convert_positions(ENCODING, [0, 1.5]),
     r"char_positions entry must be an int position, got float 1\.5"),
    ("convert_in_empty_encoding", lambda: convert_positions(EncodingWithOffsets([], [], []), [0]),
     r"cannot convert positions in an empty encoding"),
    ("encoding_lengths_differ", lambda: EncodingWithOffsets([1, 2], ["a"], [(0, 1)]),
     r"EncodingWithOffsets needs one token and one offset per id: got 2 ids, 1 tokens"),
    ("encoding_bad_offset", lambda: EncodingWithOffsets([1], ["a"], [(3, 1)]),
     r"offsets must satisfy 0 <= start <= end; token 0 has \(3, 1\)"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in POSITIONS], ids=[c[0] for c in POSITIONS])
def test_bad_positions_are_input_errors(call, match):
    with raises_exactly(mi.InputError, match=match):
        call()


def test_forward_text_of_a_non_string(loaded):
    with raises_exactly(mi.TokenizerError, match=r"encode needs a str, got list"):
        loaded["llama"].forward_text(["hi"])


COMPARISON = LogitComparison(torch.zeros(10), torch.arange(10.0))
ANALYSIS = [
    ("top_changed_negative_k", lambda m: COMPARISON.top_changed_tokens(-5),
     r"top_changed_tokens: k \(how many tokens to list\) must be an int >= 1, got -5"),
    ("top_changed_float_k", lambda m: COMPARISON.top_changed_tokens(2.5), r"must be an int >= 1, got 2\.5"),
    ("logit_diff_float_token", lambda m: COMPARISON.logit_diff(1.5),
     r"token id must be an int, got float 1\.5"),
    ("kl_not_a_tensor", lambda m: mi.kl_divergence([0.0], torch.zeros(1)),
     r"kl_divergence: baseline_logits must be a float tensor, got list"),
    ("knockout_edge_float", lambda m: KnockoutSpec().edge(1.5, 0),
     r"from_pos must be an int, got float 1\.5"),
    ("knockout_head_str", lambda m: KnockoutSpec().head("0"), r"head must be an int, got str"),
    ("steering_scale_nan", lambda m: SteeringSpec.scale(float("nan")),
     r"steering scale must be finite, got nan"),
    ("steering_set_value_str", lambda m: SteeringSpec.set_value("half"),
     r"steering set-value must be a number, got str"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in ANALYSIS], ids=[c[0] for c in ANALYSIS])
def test_bad_analysis_arguments_are_intervention_errors(loaded, call, match):
    with raises_exactly(mi.InterventionError, match=match):
        call(loaded["llama"])


INPUT_ANALYSIS = [
    ("logit_lens_k_zero", lambda m: mi.logit_lens(m, [5, 6], k=0),
     r"logit_lens: k \(predictions kept per layer\) must be an int in \[1, 256\].*got 0"),
    ("logit_lens_k_beyond_vocab", lambda m: mi.logit_lens(m, [5, 6], k=1000),
     r"must be an int in \[1, 256\].*got 1000"),
    ("logit_lens_unknown_hook", lambda m: mi.logit_lens(m, [5, 6], hook="resid"),
     r"unknown lens hook 'resid'"),
    ("steering_vector_nan_scale", lambda m: steering_vector_hooks(torch.ones(64), [0], scale=float("nan")),
     r"steering scale must be a finite number, got nan"),
    ("steering_vector_nan_entries", lambda m: steering_vector_hooks(torch.full((64,), float("nan")), [0]),
     r"steering vector holds NaN or inf values"),
    ("steering_vector_list", lambda m: steering_vector_hooks([1.0] * 64, [0]),
     r"steering vector must be a float tensor \[D\], got list"),
    ("steering_vector_float_positions", lambda m: steering_vector_hooks(torch.ones(64), [0], positions=[1.5]),
     r"steering positions must be ints"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in INPUT_ANALYSIS],
 ids=[c[0] for c in INPUT_ANALYSIS])
def test_bad_analysis_inputs_are_input_errors(loaded, call, match):
    with raises_exactly(mi.InputError, match=match):
        call(loaded["llama"])
