"""The backend contract, proved from outside the library.

A toy third backend (a 2-layer MLP-only "model" with a previous-token feature, its own
hook table and its own decoding state) is defined and registered here, loaded from a
folder through ``MIModel.from_pretrained`` and driven through ``forward``,
``hook_points()``, HookSpec validation, interventions and generation, with no library
edit. A new intervention kind is defined here too and runs through ``HookSpec.intervene``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import torch_mi as mi
from torch_mi.backends import (
    Architecture,
    Target,
    WeightMap,
    register_architecture,
    unregister_architecture,
)
from torch_mi.backends.inputs import check_input_ids
from torch_mi.hooks import (
    ForwardCall,
    PointKind,
    PointRow,
    PointTable,
    declare_point_kind,
    make_runtime,
)
from torch_mi.hooks.points import EMBED, FINAL_NORM, MLP_OUT, RESID_POST, RESID_PRE

TOY_HIDDEN = declare_point_kind(PointKind(
    "ToyHidden", "blocks.{layer}.toy.hook_hidden", doc="ReLU neurons of the toy MLP"))


@dataclass(frozen=True)
class ToyConfig:
    vocab_size: int
    hidden_size: int
    inner_size: int
    num_layers: int
    model_type: str = "toy_mlp"


def _resid(c: ToyConfig) -> tuple:
    return ("batch", "seq", c.hidden_size)


TOY_POINTS = PointTable("toy", [
    PointRow("embed", EMBED, _resid),
    PointRow("resid_pre", RESID_PRE, _resid),
    PointRow("hidden", TOY_HIDDEN, lambda c: ("batch", "seq", c.inner_size)),
    PointRow("mlp_out", MLP_OUT, _resid),
    PointRow("resid_post", RESID_POST, _resid),
    PointRow("final", FINAL_NORM, _resid),
])


class ToyState:
    """The toy's decoding state: the embedding of the last token seen ([B,1,D])."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None


class ToyBackend(nn.Module):
    """h_t = E[x_t] + E[x_{t-1}]; then per layer h += W_down relu(W_up h); logits = W_head h."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.up = nn.ModuleList(nn.Linear(c.hidden_size, c.inner_size, bias=False)
                                for _ in range(c.num_layers))
        self.down = nn.ModuleList(nn.Linear(c.inner_size, c.hidden_size, bias=False)
                                  for _ in range(c.num_layers))
        self.head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.requires_grad_(False)
        self._points = TOY_POINTS.shapes(c, c.num_layers)
        self.layer_points = [TOY_POINTS.layer_points(i) for i in range(c.num_layers)]
        self.model_points = TOY_POINTS.model_points()

    @classmethod
    def empty(cls, config: ToyConfig, device, dtype) -> ToyBackend:
        return cls(config).to(device=device, dtype=dtype).eval()

    num_layers = property(lambda self: self.config.num_layers)
    hidden_size = property(lambda self: self.config.hidden_size)
    vocab_size = property(lambda self: self.config.vocab_size)
    num_heads = property(lambda self: 0)
    device = property(lambda self: self.embed.weight.device)
    dtype = property(lambda self: self.embed.weight.dtype)

    def hook_points(self) -> dict:
        return dict(self._points)

    def make_state(self) -> ToyState:
        return ToyState()

    def forward(self, input_ids: Any, hooks=None, *, attention_mask=None, state=None,
                last_logits_only: bool = False) -> mi.HookCache:
        ids = check_input_ids(input_ids, self.config.vocab_size, self.device)
        if attention_mask is not None and not bool(torch.as_tensor(attention_mask).all()):
            raise mi.InputError("the toy backend has no padding support")
        runtime, cache = make_runtime(hooks, self._points, self.config.num_layers)
        e = self.embed(ids)  # [B,S,D]
        first = state.last if state is not None and state.last is not None else torch.zeros_like(
            e[:, :1])
        h = runtime.fire(self.model_points.embed, e + torch.cat([first, e[:, :-1]], dim=1))
        for i, p in enumerate(self.layer_points):
            h = runtime.fire(p.resid_pre, h)
            a = runtime.fire(p.hidden, torch.relu(self.up[i](h)))  # [B,S,I]
            m = runtime.fire(p.mlp_out, self.down[i](a))
            h = runtime.fire(p.resid_post, h + m)
        h = runtime.fire(self.model_points.final, h)
        if state is not None:
            state.last = e[:, -1:]
        cache.set_output(self.head(h[:, -1:] if last_logits_only else h))
        return cache

    def project_to_vocab(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden.to(self.dtype))

    def embedding_vector(self, token_id: int) -> torch.Tensor:
        return self.embed.weight[int(token_id)].detach()


def toy_translate(hf: dict) -> ToyConfig:
    return ToyConfig(hf["vocab_size"], hf["hidden_size"], hf["inner_size"],
                     hf["num_hidden_layers"])


def toy_weights(config: ToyConfig) -> WeightMap:
    targets = {"embed.weight": Target("embed.weight"), "head.weight": Target("head.weight")}
    for i in range(config.num_layers):
        targets[f"layers.{i}.up.weight"] = Target(f"up.{i}.weight")
        targets[f"layers.{i}.down.weight"] = Target(f"down.{i}.weight")
    return WeightMap(targets)


V, D, INNER, LAYERS = 32, 8, 16, 2


@pytest.fixture(scope="module")
def toy_weights_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    weights = {"embed.weight": torch.randn(V, D, generator=g),
               "head.weight": torch.randn(V, D, generator=g)}
    for i in range(LAYERS):
        weights[f"layers.{i}.up.weight"] = torch.randn(INNER, D, generator=g)
        weights[f"layers.{i}.down.weight"] = torch.randn(D, INNER, generator=g) * 0.5
    return weights


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory, toy_weights_dict):
    row = register_architecture(Architecture("toy_mlp", ToyBackend, toy_translate, toy_weights))
    folder = tmp_path_factory.mktemp("toy")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "toy_mlp", "vocab_size": V, "hidden_size": D, "inner_size": INNER,
        "num_hidden_layers": LAYERS}))
    save_file(toy_weights_dict, str(folder / "model.safetensors"))
    yield folder
    unregister_architecture(row.model_type)


@pytest.fixture(scope="module")
def toy(toy_folder) -> mi.MIModel:
    return mi.MIModel.from_pretrained(toy_folder, device="cpu")


def by_hand(w: dict[str, torch.Tensor], ids: list[int], zero_mlp0: bool = False) -> torch.Tensor:
    """The toy's logits [S, V] computed directly from its weights."""
    e = w["embed.weight"][ids]
    h = e + torch.cat([torch.zeros(1, D), e[:-1]])
    for i in range(LAYERS):
        m = torch.relu(h @ w[f"layers.{i}.up.weight"].T) @ w[f"layers.{i}.down.weight"].T
        h = h + (torch.zeros_like(m) if zero_mlp0 and i == 0 else m)
    return h @ w["head.weight"].T


IDS = [3, 17, 5, 9, 30]


def test_the_registry_builds_the_toy_backend_from_a_folder(toy, toy_weights_dict):
    assert type(toy.backend) is ToyBackend and isinstance(toy.backend, mi.MIBackend)
    assert "toy_mlp" in mi.SUPPORTED_MODEL_TYPES
    torch.testing.assert_close(toy.forward([IDS]).output()[0], by_hand(toy_weights_dict, IDS),
                               rtol=1e-5, atol=1e-5)


def test_strict_accounting_holds_for_the_toy(toy_folder, toy_weights_dict, tmp_path):
    (tmp_path / "config.json").write_text((toy_folder / "config.json").read_text())
    save_file({**toy_weights_dict, "stray.weight": torch.zeros(2)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(mi.WeightError, match="stray.weight"):
        mi.MIModel.from_pretrained(tmp_path, device="cpu")


def test_hook_points_come_from_the_toy_table(toy):
    points = toy.hook_points()
    assert next(iter(points)) == mi.HookPoint.Embed and list(points)[-1] == mi.HookPoint.FinalNorm
    assert points[mi.HookPoint.ToyHidden(1)] == ("batch", "seq", INNER)
    assert points[mi.HookPoint.parse("blocks.0.hook_resid_post")] == ("batch", "seq", D)
    assert len(points) == 2 + 4 * LAYERS
    assert str(mi.HookPoint.ToyHidden(1)) == "blocks.1.toy.hook_hidden"


def test_capture_and_intervention_through_the_toy(toy, toy_weights_dict):
    spec = (mi.HookSpec().capture("blocks.1.toy.hook_hidden", mi.HookPoint.MlpOut(0))
            .intervene(mi.HookPoint.MlpOut(0), mi.Intervention.Zero))
    cache = toy.forward([IDS], spec)
    assert cache["blocks.1.toy.hook_hidden"].shape == (1, len(IDS), INNER)
    assert cache[mi.HookPoint.MlpOut(0)].abs().sum() > 0  # captured before the Zero
    torch.testing.assert_close(cache.output()[0], by_hand(toy_weights_dict, IDS, zero_mlp0=True),
                               rtol=1e-5, atol=1e-5)


def test_hookspec_validation_on_the_toy(toy):
    with pytest.raises(mi.HookError, match="Did you mean 'blocks.0.toy.hook_hidden'"):
        toy.forward([IDS], mi.HookSpec().capture("blocks.0.toy.hook_hiden"))
    with pytest.raises(mi.HookError, match="not computed by this backend"):
        toy.forward([IDS], mi.HookSpec().capture(mi.HookPoint.AttnPattern(0)))
    with pytest.raises(mi.HookError, match="layer 2 is out of range"):
        toy.forward([IDS], mi.HookSpec().capture(mi.HookPoint.ToyHidden(2)))
    with pytest.raises(mi.HookError, match="state_knockout"):
        toy.forward([IDS], mi.HookSpec().set_state_knockout(mi.StateKnockoutSpec().position(0)))


def test_generation_uses_the_toy_state(toy, toy_weights_dict):
    cached = toy.generate(IDS, 6, ignore_eos=True)
    recomputed = toy.generate(IDS, 6, ignore_eos=True, recompute=True)
    tokens = list(IDS)
    for _ in range(6):  # greedy by hand
        tokens.append(int(by_hand(toy_weights_dict, tokens)[-1].argmax()))
    assert cached.token_ids == recomputed.token_ids == tokens


def test_a_toy_only_point_is_refused_by_the_transformer(tiny_models, loaded):
    with pytest.raises(mi.HookError, match="ToyHidden is not computed by this backend"):
        loaded["llama"].forward(tiny_models["llama"].input_ids,
                                mi.HookSpec().capture(mi.HookPoint.ToyHidden(0)))


@pytest.mark.parametrize("state_spec", ["knockout", "steering"])
def test_a_transformer_refuses_rwkv_state_specs(tiny_models, loaded, state_spec):
    spec = mi.HookSpec().capture(mi.HookPoint.ResidPost(0))
    if state_spec == "knockout":
        spec.set_state_knockout(mi.StateKnockoutSpec().position(1))
    else:
        spec.set_state_steering(mi.StateSteeringSpec(0.5).position(1))
    with pytest.raises(mi.HookError, match=f"state_{state_spec}.*cannot honour|cannot honour.*"
                                           f"state_{state_spec}"):
        loaded["llama"].forward(tiny_models["llama"].input_ids, spec)


# ---- a new intervention kind, defined outside the library ---------------------------------
@dataclass(frozen=True)
class PatchFromPoint(mi.Intervention):
    """Replace the activation by the value captured earlier in the same forward at
    ``source`` (read from the call's cache), and count its uses in the call's scratch."""

    source: mi.HookPoint
    mutates_input: ClassVar[bool] = False

    def apply(self, tensor: torch.Tensor, point: mi.HookPoint,
              call: ForwardCall) -> torch.Tensor:
        call.scratch["uses"] = call.scratch.get("uses", 0) + 1
        return call.cache[self.source].to(tensor.dtype)


def test_a_new_intervention_kind_runs_through_hookspec(tiny_models, loaded):
    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    source, target = mi.HookPoint.ResidPost(0), mi.HookPoint.ResidPost(1)
    spec = mi.HookSpec().capture(source).intervene(target, PatchFromPoint(source))
    patched = model.forward(ids, spec).output()
    # The same edit with the built-in Replace: the model's own logits for resid_post(0).
    expected = model.project_to_vocab(model.forward(ids, mi.HookSpec().capture(source))[source])
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(patched, model.forward(ids).output())


def test_an_intervention_kind_gets_fresh_scratch_per_call(tiny_models, loaded):
    seen: list[dict] = []

    @dataclass(frozen=True)
    class Spy(mi.Intervention):
        def apply(self, tensor, point, call):
            call.scratch[str(point)] = True
            seen.append(call.scratch)
            return tensor

    model, ids = loaded["llama"], tiny_models["llama"].input_ids
    spec = mi.HookSpec().intervene(mi.HookPoint.ResidPost(0), Spy()).intervene(
        mi.HookPoint.ResidPost(1), Spy())
    model.forward(ids, spec)
    model.forward(ids, spec)
    assert len(seen) == 4 and seen[0] is seen[1] and seen[2] is seen[3] and seen[0] is not seen[2]
    assert seen[0] == {"blocks.0.hook_resid_post": True, "blocks.1.hook_resid_post": True}


def test_something_that_is_not_an_intervention_is_refused():
    class NotOne:
        def apply(self, tensor, point, call):
            return tensor

    with pytest.raises(mi.InterventionError, match="needs an Intervention"):
        mi.HookSpec().intervene(mi.HookPoint.Embed, NotOne())


def test_tl_weight_names_on_a_backend_without_weights(toy, loaded):
    """``hasattr(model, "W_Q")`` is False (not an exception) where the backend has no
    TransformerLens-layout weights; ``model.weights`` says why with a ConfigError."""
    assert not hasattr(toy, "W_Q")
    with pytest.raises(AttributeError, match="W_U: this backend .* no TransformerLens"):
        toy.W_U  # noqa: B018
    with pytest.raises(mi.ConfigError, match="exposes no TransformerLens-layout weights"):
        toy.weights  # noqa: B018
    assert hasattr(loaded["llama"], "W_Q")
