"""Early exit: ``forward(..., stop_at_layer=L)`` runs blocks 0..L-1 (TransformerLens's
exclusive convention) and returns the residual stream there; its captures equal the full
forward's on every variant; what it cannot do is a typed error before any work."""

from __future__ import annotations

import pytest
import torch

import torch_mi as mi


def _points_before(model: mi.MIModel, stop: int) -> list[str]:
    return [str(p) for p in model.hook_points()
            if (p.layer is not None and p.layer < stop) or str(p) == "hook_embed"]


def test_captures_equal_the_full_forward(variant, loaded, tiny_models):
    model, ids = loaded[variant], tiny_models[variant].input_ids
    stop = model.num_layers - 1
    spec = mi.HookSpec().capture(*_points_before(model, stop))
    full = model.forward(ids, spec)
    early = model.forward(ids, spec, stop_at_layer=stop)
    assert set(early) == set(full) and len(early) > 20
    for point in full:
        torch.testing.assert_close(early[point], full[point], rtol=0, atol=0,
                                   msg=lambda m, p=point: f"{p}: {m}")
    # The output is the residual after block stop-1, not logits.
    torch.testing.assert_close(early.output(), full[f"blocks.{stop - 1}.hook_resid_post"],
                               rtol=0, atol=0)
    assert early.output().shape == (*ids.shape, model.hidden_size)


def test_bounds_and_negative_layers(loaded, tiny_models):
    model, ids = loaded["gemma3"], tiny_models["gemma3"].input_ids  # 3 layers
    spec = mi.HookSpec().capture("hook_embed", *[f"blocks.{i}.hook_resid_post"
                                                for i in range(3)])
    full = model.forward(ids, spec)
    torch.testing.assert_close(model.forward(ids, stop_at_layer=0).output(),
                               full["hook_embed"], rtol=0, atol=0)
    torch.testing.assert_close(model.forward(ids, stop_at_layer=3).output(),
                               full["blocks.2.hook_resid_post"], rtol=0, atol=0)
    torch.testing.assert_close(model.forward(ids, stop_at_layer=-1).output(),
                               full["blocks.1.hook_resid_post"], rtol=0, atol=0)
    torch.testing.assert_close(model.forward(ids, stop_at_layer=-3).output(),
                               full["hook_embed"], rtol=0, atol=0)


def test_interventions_before_the_stop_apply(loaded, tiny_models):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    spec = mi.HookSpec().intervene("blocks.0.hook_mlp_out", mi.Intervention.Zero)
    early = model.forward(ids, spec, stop_at_layer=1).output()
    mid = model.forward(ids, mi.HookSpec().capture("blocks.0.hook_resid_mid"))
    torch.testing.assert_close(early, mid["blocks.0.hook_resid_mid"], rtol=0, atol=0)


@pytest.mark.parametrize("points", (["blocks.1.hook_resid_pre"], ["hook_final_norm"],
                                    ["ln_final.hook_scale", "blocks.1.attn.hook_z"]))
def test_points_past_the_stop_are_a_hook_error(points, loaded, tiny_models):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    with pytest.raises(mi.HookError, match="would never fire: " + ", ".join(sorted(points))):
        model.forward(ids, mi.HookSpec().capture("blocks.0.hook_z", *points), stop_at_layer=1)
    with pytest.raises(mi.HookError, match=points[0]):
        model.forward(ids, mi.HookSpec().intervene(points[0], mi.Intervention.Zero), stop_at_layer=1)
    with pytest.raises(mi.HookError, match="runs the embedding only"):
        model.forward(ids, mi.HookSpec().capture("blocks.0.hook_resid_pre"), stop_at_layer=0)


@pytest.mark.parametrize("bad", (3, -3, True, 1.0, "1"))
def test_bad_values_are_input_errors(bad, loaded, tiny_models):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    with pytest.raises(mi.InputError, match="stop_at_layer must be an int in -2..2"):
        model.forward(ids, stop_at_layer=bad)


def test_state_and_last_logits_only_are_refused_and_state_is_unchanged(loaded, tiny_models):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    state = model.make_state()
    model.forward(ids[:, :5], state=state)
    before = (state.seq_len(), state.seen_tokens)
    with pytest.raises(mi.InputError, match="cannot be combined with state"):
        model.forward(ids[:, 5:6], state=state, stop_at_layer=1)
    assert (state.seq_len(), state.seen_tokens) == before
    with pytest.raises(mi.InputError, match="drop last_logits_only"):
        model.forward(ids, last_logits_only=True, stop_at_layer=1)
    # The state still decodes as if the refused call had never happened.
    step = model.forward(ids[:, 5:6], state=state).output()
    torch.testing.assert_close(step[:, -1], model.forward(ids[:, :6]).output()[:, -1],
                               rtol=1e-5, atol=1e-5)
