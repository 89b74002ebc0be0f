"""docs/from-transformerlens.md: every TransformerLens snippet and its torch-mi equivalent
run on the same tiny LLaMA weights and give the same result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import torch_mi as mi
from tests.helpers.transformerlens import hooked_transformer

pytest.importorskip("transformer_lens")

PAGE = Path(__file__).resolve().parents[1] / "docs" / "from-transformerlens.md"
BLOCK = re.compile(r"```python (tl|mi)-(\d+)\n(.*?)```", re.S)


def snippets() -> dict[str, dict[str, str]]:
    pairs: dict[str, dict[str, str]] = {}
    for side, number, code in BLOCK.findall(PAGE.read_text()):
        pairs.setdefault(number, {})[side] = code
    return pairs


PAIRS = snippets()


def test_the_page_has_five_complete_pairs():
    assert len(PAIRS) >= 5
    assert all(set(pair) == {"tl", "mi"} for pair in PAIRS.values()), PAIRS.keys()


@pytest.fixture(scope="module")
def models(tiny_models):
    tiny = tiny_models["llama"]
    model = mi.MIModel.from_pretrained(tiny.path, device="cpu")
    return model, hooked_transformer("llama", tiny.hf_copy()), tiny.input_ids


def run(code: str, **names) -> object:
    scope = {"mi": mi, "torch": torch, **names}
    exec(compile(code, str(PAGE), "exec"), scope)  # our own documentation
    return scope["result"]


@pytest.mark.parametrize("number", sorted(PAIRS))
def test_snippet_pair_agrees(models, number):
    model, tl_model, tokens = models
    expected = run(PAIRS[number]["tl"], tl_model=tl_model, tokens=tokens.clone())
    got = run(PAIRS[number]["mi"], model=model, tokens=tokens.clone())
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-5)


def test_a_wrong_snippet_would_be_caught(models):
    """The comparison is not vacuous: a different layer's pattern differs from TL's."""
    model, tl_model, tokens = models
    expected = run(PAIRS["1"]["tl"], tl_model=tl_model, tokens=tokens)
    wrong = PAIRS["1"]["mi"].replace("blocks.1.", "blocks.0.")
    with pytest.raises(AssertionError):
        torch.testing.assert_close(run(wrong, model=model, tokens=tokens), expected)
