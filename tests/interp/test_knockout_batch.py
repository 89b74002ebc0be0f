"""Batched knockout: a list of prompts runs as one left-padded batch whose per-prompt results
equal each prompt alone and HuggingFace with the same edges removed by a 4-D additive mask."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi
from torch_mi.interp.knockout import (
    AblationResult,
    BatchAblationResult,
    KnockoutSpec,
    run_knockout,
)

LENGTHS = (12, 7, 20)  # unequal: rows are left-padded to 20


def rows_of(tiny) -> list[list[int]]:
    ids = tiny.input_ids
    return [ids[i % 2, :n].tolist() for i, n in enumerate(LENGTHS)]


def hf_knocked_out(tiny, row: list[int], cells: list[tuple[int, int]]) -> torch.Tensor:
    """HF's last-position logits with (query, key) cells removed at every layer and head."""
    s = len(row)
    blocked = torch.ones(s, s, dtype=torch.bool).triu(1)
    for q, k in cells:
        blocked[q, k] = True
    additive = torch.zeros(s, s).masked_fill(blocked, torch.finfo(torch.float32).min)
    with torch.no_grad():
        return tiny.hf(torch.tensor([row]), attention_mask=additive[None, None]).logits[0, -1]


def test_batch_knockout_matches_huggingface_row_by_row(tiny_models, loaded):
    tiny, model = tiny_models["llama"], loaded["llama"]
    rows = rows_of(tiny)
    spec = KnockoutSpec().edge(6, 0).edge(6, 3).from_to_positions(5, [1, 2])
    batch = run_knockout(model, rows, spec)
    assert isinstance(batch, BatchAblationResult) and len(batch) == len(rows)
    cells = [(6, 0), (6, 3), (5, 1), (5, 2)]
    for row, result in zip(rows, batch, strict=True):
        assert isinstance(result, AblationResult) and result.spec is spec
        with torch.no_grad():
            hf_base = tiny.hf(torch.tensor([row])).logits[0, -1]
        torch.testing.assert_close(result.baseline_logits, hf_base, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(result.ablated_logits, hf_knocked_out(tiny, row, cells),
                                   atol=2e-5, rtol=1e-4)
    assert float(batch.kl_divergences().min()) > 0  # every row really changed


@pytest.mark.parametrize("variant", ["llama", "mistral", "gemma2"])
def test_padded_rows_equal_each_prompt_alone(tiny_models, loaded, variant):
    tiny, model = tiny_models[variant], loaded[variant]
    rows = rows_of(tiny)
    spec = KnockoutSpec().layer(1).head(1).edge(6, 0).to_position(2)
    batch = run_knockout(model, rows, spec)
    for row, got in zip(rows, batch, strict=True):
        alone = run_knockout(model, row, spec)
        torch.testing.assert_close(got.baseline_logits, alone.baseline_logits,
                                   atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(got.ablated_logits, alone.ablated_logits,
                                   atol=2e-5, rtol=1e-4)


def test_batch_aggregates(tiny_models, loaded):
    model = loaded["qwen2"]
    rows = rows_of(tiny_models["qwen2"])
    batch = run_knockout(model, rows, KnockoutSpec().layer(0).from_position(6))
    kls = torch.tensor([r.kl_divergence() for r in batch], dtype=torch.float64)
    torch.testing.assert_close(batch.kl_divergences(), kls)
    assert batch.mean_kl_divergence() == pytest.approx(float(kls.mean()))
    diffs = batch.logit_diffs([3, 4, 5])
    assert diffs.tolist() == pytest.approx([batch[i].logit_diff(3 + i) for i in range(3)])
    shifts = batch.probability_shifts(7)
    assert shifts[1].tolist() == pytest.approx(list(batch[1].probability_shift(7)))
    with pytest.raises(mi.InterventionError, match="2 token ids for 3 prompts"):
        batch.logit_diffs([1, 2])


def test_bad_batches_fail_before_any_forward(tiny_models, loaded, monkeypatch):
    model = loaded["llama"]
    rows = rows_of(tiny_models["llama"])

    def no_forward(*args, **kwargs):
        raise AssertionError("a forward ran before the input was checked")

    monkeypatch.setattr(model, "forward", no_forward)
    # position 9 fits rows of 12 and 20 tokens but not the one of 7: the whole call fails
    with pytest.raises(mi.InterventionError, match="position 9 is outside a sequence of 7"):
        run_knockout(model, rows, KnockoutSpec().edge(9, 0))
    with pytest.raises(mi.InputError, match="at least one prompt"):
        run_knockout(model, [], KnockoutSpec().edge(1, 0))
    with pytest.raises(mi.InputError, match="got float"):
        run_knockout(model, ["ab", 1.5], KnockoutSpec().edge(1, 0))
    with pytest.raises(mi.InterventionError, match="no edges"):
        run_knockout(model, ["abc", "de"], KnockoutSpec())
