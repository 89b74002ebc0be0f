"""Generation on RWKV: the recurrent state across steps equals re-running the sequence
(and the ``rwkv`` package's greedy choice), hooks fire once per step, stop strings and
seeded sampling work with the byte-level world tokenizer (whose strict decode would fail on
a step that ends inside a character), and the forward options of the transformer backend
(``stop_at_layer``, ``allow_long_context``) give results or typed errors, never TypeError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import torch_mi as mi
from tests.backends.rwkv.conftest import sample_ids
from tests.helpers.rwkv_oracle import run_oracle
from tests.helpers.rwkv_world import write_world_model
from torch_mi.errors import HookError, InputError, TokenizerError
from torch_mi.world_tokenizer import WorldTokenizer

PROMPT = "Hello the"


@dataclass
class WorldCase:
    version: str
    pth: Path
    model: mi.MIModel


@pytest.fixture(scope="module")
def world_models(tmp_path_factory) -> dict[str, WorldCase]:
    root = tmp_path_factory.mktemp("rwkv_world")
    out = {}
    for version in ("v6", "v7"):
        pth = write_world_model(version, root / version, pth=True)
        out[version] = WorldCase(version, pth, mi.MIModel.from_pretrained(pth, device="cpu"))
    return out


@pytest.fixture(params=["v6", "v7"])
def world(request, world_models) -> WorldCase:
    return world_models[request.param]


# ---- cached state == recompute == the rwkv package --------------------------------------
def test_cached_state_equals_recompute(rwkv):
    model = rwkv.model
    prompt = sample_ids(1, 7, seed=1)[0].tolist()
    cached = model.generate(prompt, 20, ignore_eos=True)
    again = model.generate(prompt, 20, ignore_eos=True, recompute=True)
    assert cached.generated_tokens == 20
    assert cached.token_ids == again.token_ids
    assert cached.stop_reason == again.stop_reason == "max_new_tokens"


def test_greedy_tokens_are_the_rwkv_package_argmax(world):
    """Every cached-state step picks the argmax of the package's logits over the same ids."""
    result = world.model.generate(PROMPT, 12, ignore_eos=True)
    ids, n_prompt = result.token_ids, result.prompt_tokens
    oracle = run_oracle(world.pth, ids[:-1], world.version).logits  # [T-1, V]
    steps = oracle[n_prompt - 1:]  # [12, V]: logits that chose each generated token
    top2 = steps.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # a near-tie could flip on rounding alone
    assert int(clear.sum()) >= 10
    chosen = torch.tensor(result.step_tokens)
    assert torch.equal(steps.argmax(-1)[clear], chosen[clear])


def test_equal_length_batch_equals_single_runs_and_padding_is_refused(rwkv):
    model = rwkv.model
    rows = sample_ids(2, 6, seed=2).tolist()
    batch = model.generate(rows, 8, ignore_eos=True)
    singles = [model.generate(r, 8, ignore_eos=True) for r in rows]
    assert [b.token_ids for b in batch] == [s.token_ids for s in singles]
    with pytest.raises(InputError, match="padded batches"):
        model.generate([rows[0], rows[1][:3]], 4, ignore_eos=True)


# ---- hooks at every step --------------------------------------------------------------
@pytest.mark.parametrize("recompute", [False, True])
def test_hooks_fire_once_per_step(rwkv, recompute):
    model = rwkv.model
    seen: list[int] = []

    def count(t, point):
        seen.append(t.shape[1])
        return t

    prompt = sample_ids(1, 5, seed=3)[0].tolist()
    spec = mi.HookSpec().intervene(mi.HookPoint.ResidPost(1), mi.Intervention.Apply(count))
    result = model.generate(prompt, 6, ignore_eos=True, hooks=spec, recompute=recompute)
    assert result.generated_tokens == 6
    expected = [5 + k for k in range(6)] if recompute else [5] + [1] * 5
    assert seen == expected  # one call per step: the prompt, then one token (or all of them)


def test_steering_applies_at_every_cached_step(rwkv):
    """An Add at resid_post steers every generated token: the cached run equals the
    recompute run, where the same Add re-applies to every position each step."""
    model = rwkv.model
    prompt = sample_ids(1, 5, seed=4)[0].tolist()
    steer = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0)) * 3
    spec = mi.HookSpec().intervene(mi.HookPoint.ResidPost(0), mi.Intervention.Add(steer))
    base = model.generate(prompt, 10, ignore_eos=True)
    cached = model.generate(prompt, 10, ignore_eos=True, hooks=spec)
    again = model.generate(prompt, 10, ignore_eos=True, hooks=spec, recompute=True)
    assert cached.step_tokens == again.step_tokens != base.step_tokens


# ---- stop strings, partial characters, sampling ------------------------------------------
def _clean_char(text: str, start: int) -> tuple[int, str]:
    """The first character at or after ``start`` that is neither U+FFFD nor a control."""
    for k in range(start, len(text)):
        if text[k] != "\ufffd" and text[k].isprintable():
            return k, text[k]
    pytest.skip("the free run produced no printable character to stop on")


def test_stop_ids_and_stop_strings(world):
    model = world.model
    free = model.generate(PROMPT, 24, ignore_eos=True)
    first = free.step_tokens[4]
    stopped = model.generate(PROMPT, 24, stop=[first], ignore_eos=True)
    assert stopped.stop_reason == "stop_id"
    assert stopped.step_tokens == free.step_tokens[:free.step_tokens.index(first)]
    where, piece = _clean_char(free.generated_text, 3)
    cut = model.generate(PROMPT, 24, stop=piece, ignore_eos=True)
    assert cut.stop_reason == "stop_string"
    assert cut.generated_text == free.generated_text[:free.generated_text.index(piece)]
    assert where >= free.generated_text.index(piece)
    assert cut.full_text == PROMPT + cut.generated_text
    assert cut.token_ids == free.token_ids[:len(cut.token_ids)]


def test_partial_utf8_steps_do_not_raise(world):
    """Random models emit single bytes of multi-byte characters: generation (stop-string
    check and result text) decodes with errors='replace', token_ids stay exact, and the
    tokenizer's own decode stays strict."""
    model, tok = world.model, world.model.tokenizer
    for seed in range(6):
        result = model.generate(PROMPT, 16, temperature=1.0, seed=seed, stop="\x7f\x7f",
                                ignore_eos=True)
        try:
            tok.decode(result.step_tokens)
        except TokenizerError:
            break  # this run ends or passes inside a character: the case under test
    else:
        pytest.skip("no sampled run split a character (the tiny vocabulary makes it likely)")
    assert result.generated_text == tok.decode(result.step_tokens, errors="replace")
    assert "\ufffd" in result.generated_text
    assert tok.decode_bytes(result.token_ids) == PROMPT.encode() + tok.decode_bytes(
        result.step_tokens)


def test_seeded_sampling_is_reproducible(world):
    model = world.model
    a = model.generate(PROMPT, 16, temperature=1.2, top_k=40, seed=7, ignore_eos=True)
    b = model.generate(PROMPT, 16, temperature=1.2, top_k=40, seed=7, ignore_eos=True)
    c = model.generate(PROMPT, 16, temperature=1.2, top_k=40, seed=8, ignore_eos=True)
    greedy = model.generate(PROMPT, 16, ignore_eos=True)
    assert a.step_tokens == b.step_tokens
    assert a.step_tokens != c.step_tokens
    assert a.step_tokens != greedy.step_tokens


def test_decode_errors_argument():
    table = [None] + [bytes([b]) for b in range(256)]
    tok = WorldTokenizer(table, vocab_size=300)
    ids = tok.encode("é!")  # two byte tokens for é, then '!'
    with pytest.raises(TokenizerError, match="not UTF-8"):
        tok.decode(ids[:1])
    assert tok.decode(ids[:1], errors="replace") == "\ufffd"
    assert tok.decode(ids[:1], errors="ignore") == ""
    assert tok.decode(ids[:1], errors="backslashreplace") == "\\xc3"
    assert tok.decode(ids) == "é!"
    for bad in ("loose", None, ["strict"]):
        with pytest.raises(TokenizerError, match="errors must be one of"):
            tok.decode(ids, errors=bad)


def test_hf_tokenizer_decode_accepts_errors(tiny_models):
    tok = mi.MIModel.from_pretrained(tiny_models["llama"].path, device="cpu").tokenizer
    ids = tok.encode_raw("Hello world")
    assert tok.decode(ids, errors="replace") == tok.decode(ids) == "Hello world"
    with pytest.raises(TokenizerError, match="errors must be one of"):
        tok.decode(ids, errors="surrogateescape")


# ---- forward options: stop_at_layer and allow_long_context -----------------------------
def test_stop_at_layer_returns_the_residual(rwkv):
    model = rwkv.model
    ids = sample_ids(2, 9, seed=5)
    full = model.forward(ids, mi.HookSpec().capture(mi.HookPoint.ResidPost(0),
                                                    mi.HookPoint.ResidPost(1)))
    early = model.forward(ids, mi.HookSpec().capture(mi.HookPoint.ResidPre(1)), stop_at_layer=2)
    torch.testing.assert_close(early.output(), full[mi.HookPoint.ResidPost(1)], rtol=0, atol=0)
    torch.testing.assert_close(early[mi.HookPoint.ResidPre(1)], full[mi.HookPoint.ResidPost(0)],
                               rtol=0, atol=0)
    neg = model.forward(ids, stop_at_layer=-model.num_layers + 1)
    torch.testing.assert_close(neg.output(), full[mi.HookPoint.ResidPost(0)], rtol=0, atol=0)
    assert model.forward(ids, stop_at_layer=0).output().shape == (2, 9, model.hidden_size)
    whole = model.forward(ids, stop_at_layer=model.num_layers).output()
    assert whole.shape == (2, 9, model.hidden_size)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"stop_at_layer": 99}, InputError, "stop_at_layer must be an int"),
    ({"stop_at_layer": 1.0}, InputError, "stop_at_layer must be an int"),
    ({"stop_at_layer": True}, InputError, "stop_at_layer must be an int"),
    ({"stop_at_layer": 1, "last_logits_only": True}, InputError, "not logits"),
    ({"stop_at_layer": 1, "hooks": "late"}, HookError, "would never fire"),
    ({"stop_at_layer": 1, "state": "fresh"}, InputError, "cannot be combined with state"),
    ({"allow_long_context": "yes"}, InputError, "allow_long_context must be True or False"),
])
def test_forward_option_errors_are_typed(rwkv, kwargs, error, match):
    model = rwkv.model
    kwargs = dict(kwargs)
    if kwargs.get("hooks") == "late":
        kwargs["hooks"] = mi.HookSpec().capture(mi.HookPoint.ResidPost(1))
    state = model.make_state() if kwargs.get("state") == "fresh" else None
    if state is not None:
        kwargs["state"] = state
    with pytest.raises(error, match=match):
        model.forward(sample_ids(1, 4), **kwargs)
    if state is not None:  # the refused call left the caller's state untouched
        assert state.seen_tokens == 0


def test_allow_long_context_is_accepted_and_changes_nothing(rwkv):
    model = rwkv.model
    ids = sample_ids(1, 10, seed=6)
    torch.testing.assert_close(model.forward(ids, allow_long_context=True).output(),
                               model.forward(ids).output(), rtol=0, atol=0)
    prompt = ids[0, :4].tolist()
    assert model.generate(prompt, 5, allow_long_context=True, ignore_eos=True).token_ids == \
        model.generate(prompt, 5, ignore_eos=True).token_ids
