"""Reliability catalogue: generation arguments are type- and range-checked before any work,
and sampling never meets NaN (tiny temperatures, NaN logits)."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from tests.reliability.exact import raises_exactly
from torch_mi.generation import SamplingConfig, choose_tokens

PROMPT = [5, 6, 7]

# (case id, generate kwargs (prompt and max_new_tokens included), message must match)
BAD = [
    ("max_new_tokens_float", dict(max_new_tokens=2.5), r"max_new_tokens must be an integer, got float 2\.5"),
    ("max_new_tokens_bool", dict(max_new_tokens=True), r"max_new_tokens must be an integer, got bool"),
    ("max_new_tokens_str", dict(max_new_tokens="3"), r"max_new_tokens must be an integer, got str '3'"),
    ("max_new_tokens_negative", dict(max_new_tokens=-1), r"max_new_tokens must be >= 0, got -1"),
    ("temperature_str", dict(temperature="hot"), r"temperature must be a number, got str 'hot'"),
    ("temperature_nan", dict(temperature=float("nan")), r"temperature must be a finite number, got nan"),
    ("temperature_inf", dict(temperature=float("inf")), r"temperature must be a finite number, got inf"),
    ("temperature_negative", dict(temperature=-0.5), r"temperature must be >= 0\.0, got -0\.5"),
    ("temperature_bool", dict(temperature=True), r"temperature must be a number, got bool"),
    ("top_k_float", dict(temperature=1.0, top_k=2.5), r"top_k must be an integer, got float 2\.5"),
    ("top_k_zero", dict(temperature=1.0, top_k=0), r"top_k must be >= 1, got 0"),
    ("top_p_nan", dict(temperature=1.0, top_p=float("nan")), r"top_p must be a finite number, got nan"),
    ("top_p_zero", dict(temperature=1.0, top_p=0.0), r"top_p must be in \(0, 1\], got 0\.0"),
    ("top_p_above_one", dict(temperature=1.0, top_p=1.5), r"top_p must be in \[0\.0, 1\.0\], got 1\.5"),
    ("top_p_str", dict(temperature=1.0, top_p="most"), r"top_p must be a number, got str"),
    ("seed_too_big", dict(temperature=1.0, seed=2 ** 70), r"seed must be in \[0, 18446744073709551615\]"),
    ("seed_negative", dict(seed=-1), r"seed must be in \[0, 18446744073709551615\], got -1"),
    ("seed_float", dict(seed=1.5), r"seed must be an integer, got float 1\.5"),
    ("prompt_none", dict(prompt=None), r"prompt must be text, a list of token ids.*got NoneType"),
    ("prompt_dict", dict(prompt={"text": "hi"}), r"prompt must be text.*got dict"),
    ("prompt_bytes", dict(prompt=b"hi"), r"prompt must be text.*got bytes"),
    ("prompt_float_ids", dict(prompt=[5, 6.5]), r"prompt ids must be ints; entry 1 is float 6\.5"),
    ("prompt_float_tensor", dict(prompt=torch.tensor([5.0, 6.0])),
     r"prompt ids must be integers, got dtype torch\.float32"),
    ("prompt_empty", dict(prompt=[[]]), r"empty prompt"),
    ("prompt_out_of_vocab", dict(prompt=[5, 999]),
     r"token id 999 at position \[0, 1\] is outside the vocabulary"),
    ("stop_float", dict(stop=2.5), r"stop must be a string, a token id or a list of them, got float"),
    ("stop_entry_none", dict(stop=["x", None]),
     r"stop: each entry must be a string or an int token id, got NoneType"),
    ("stop_empty_string", dict(stop=[""]), r"stop: an empty stop string would match at once"),
    ("stop_id_outside_vocab", dict(stop=[10 ** 6]),
     r"stop: token id 1000000 is outside the vocabulary \(0\.\.255\)"),
    ("ignore_eos_str", dict(ignore_eos="no"), r"ignore_eos must be True or False, got str"),
    ("recompute_int", dict(recompute=1), r"recompute must be True or False, got int"),
    ("beyond_context", dict(max_new_tokens=300),
     r"max_new_tokens=300 after a prompt of 3 tokens needs 302 positions, beyond this model's "
     r"context of 256.*at most 254"),
]


@pytest.mark.parametrize(("kwargs", "match"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_generation_arguments_are_input_errors(loaded, kwargs, match):
    kwargs = {"prompt": PROMPT, "max_new_tokens": 2, **kwargs}
    with raises_exactly(mi.InputError, match=match):
        loaded["llama"].generate(**kwargs)


def test_hooks_that_are_not_a_hook_spec(loaded):
    with raises_exactly(mi.HookError, match=r"hooks must be a HookSpec \(or None\), got dict"):
        loaded["llama"].generate(PROMPT, 2, hooks={"blocks.0.hook_resid_pre": None})


def test_generation_past_the_context_runs_when_the_caller_opts_in(loaded):
    model = loaded["llama"]
    result = model.generate([5] * 250, 10, ignore_eos=True, allow_long_context=True)
    assert result.generated_tokens == 10


def test_a_tiny_temperature_samples_like_greedy_instead_of_crashing(loaded):
    model = loaded["llama"]
    greedy = model.generate(PROMPT, 6, ignore_eos=True)
    tiny = model.generate(PROMPT, 6, ignore_eos=True, temperature=1e-45, seed=0)
    assert tiny.step_tokens == greedy.step_tokens


def test_nan_logits_stop_generation_with_a_typed_error(loaded):
    spec = mi.HookSpec().intervene(mi.HookPoint.FinalNorm, mi.Intervention.Apply(
        lambda t, p: t * float("nan")))
    with raises_exactly(mi.HookError, match=r"generation step 0: the logits of row\(s\) \[0\] are not "
                                            r"usable.*HookSpec\(check_finite=True\)"):
        loaded["llama"].generate(PROMPT, 3, hooks=spec)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_choose_tokens_refuses_nothing_finite_and_handles_neg_inf(temperature):
    logits = torch.tensor([[0.0, float("-inf"), 3.0], [float("-inf"), 1.0, float("-inf")]])
    tokens = choose_tokens(logits, SamplingConfig(temperature), torch.Generator().manual_seed(0))
    assert tokens[1].item() == 1 and tokens[0].item() in (0, 2)


SAMPLE = [
    ("sample_temperature_nan", lambda: mi.sample_token(torch.zeros(4), float("nan")),
     r"temperature must be a finite number, got nan"),
    ("sample_nan_logits", lambda: mi.sample_token(torch.tensor([0.0, float("nan")]), 1.0),
     r"sample_token: the logits hold NaN"),
    ("sample_not_tensor", lambda: mi.sample_token([0.0, 1.0]),
     r"sample_token needs a logits tensor, got list"),
    ("token_prob_float_id", lambda: mi.extract_token_prob(torch.zeros(4), 1.5),
     r"token_id must be an integer, got float 1\.5"),
    ("token_prob_empty", lambda: mi.extract_token_prob(torch.zeros(0), 0),
     r"extract_token_prob needs non-empty logits"),
    ("sampling_config_top_k_str", lambda: SamplingConfig(1.0, "5"), r"top_k must be an integer, got str"),
]


@pytest.mark.parametrize(("call", "match"), [c[1:] for c in SAMPLE], ids=[c[0] for c in SAMPLE])
def test_bad_sampling_calls(call, match):
    with raises_exactly(mi.InputError, match=match):
        call()


def test_sample_token_with_tiny_temperature_is_greedy():
    logits = torch.tensor([1.0, 5.0, 4.999])
    assert mi.sample_token(logits, 1e-45, torch.Generator().manual_seed(0)) == 1
