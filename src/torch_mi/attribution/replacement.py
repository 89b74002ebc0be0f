"""The local replacement model: a forward mode of the transformer backend, built from
hook interventions only (no second model class).

What changes, and why (the attribution-graph method):

* attention patterns (``attn.hook_pattern``) and every norm's denominator
  (``ln*.hook_scale``, ``ln_final.hook_scale``) are detached: values unchanged, gradient
  stops there. Intervening at the pattern also makes the backend take its explicit
  attention core (SDPA never materialises the pattern);
* the MLP output becomes ``skip(x) + (mlp_out - skip(x)).detach()``, where ``x`` is the
  transcoder's input at ``feature_input_hook`` and ``skip`` its ``W_skip`` (zero without
  one): the value is the real output, the gradient flows only through the linear skip;
* ``hook_embed`` is tapped so the stream needs gradients (weights stay frozen).

With those, every tensor downstream of the embedding is a linear function of the
residual stream, so one backward pass gives exact direct effects. The forward values are
the model's own (error nodes carry ``mlp_out - reconstruction``); with ``splice=True`` the
MLP outputs are literally rebuilt as ``reconstruction + error`` by the dictionaries
package's transcoder splice, which the exactness tests use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from torch_mi.dictionaries.clt import CrossLayerTranscoder
from torch_mi.dictionaries.splice import splice
from torch_mi.errors import ConfigError
from torch_mi.hooks.call import ForwardCall
from torch_mi.hooks.grad import tap
from torch_mi.hooks.interventions import Intervention
from torch_mi.hooks.points import HookPoint, as_point
from torch_mi.hooks.spec import HookSpec

FROZEN_NORMS = ("ln1", "ln2", "ln1_post", "ln2_post")


@dataclass
class Tape:
    """The graph tensors of one replacement forward: feature inputs and (linearised)
    feature outputs per layer [B,S,D], the tapped embedding and the final norm output."""

    inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    embed: torch.Tensor | None = None
    final: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Detach(Intervention):
    """Same value, no gradient (a frozen pattern or norm denominator)."""

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        return tensor.detach()


@dataclass(frozen=True, eq=False)
class Record(Intervention):
    """Keep the tensor (a graph node) on the tape; the activation is unchanged."""

    tape: Tape
    slot: str  # "inputs", "embed" or "final"
    layer: int | None = None

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        if self.slot == "embed":
            tensor = tap(tensor)  # the stream's only source of gradients
        if self.layer is None:
            setattr(self.tape, self.slot, tensor)
        else:
            getattr(self.tape, self.slot)[self.layer] = tensor
        return tensor


@dataclass(frozen=True, eq=False)
class LinearSkip(Intervention):
    """``skip(x) + (out - skip(x)).detach()``: the MLP is linear in its input (through the
    transcoder's skip matrix [D, D], applied as ``x @ W_skip.T``) or constant without one."""

    tape: Tape
    layer: int
    skip: torch.Tensor | None

    def apply(self, tensor: torch.Tensor, point: HookPoint, call: ForwardCall) -> torch.Tensor:
        if self.skip is None:
            out = tap(tensor.detach())  # a graph node, so its gradient can be read
        else:
            x = self.tape.inputs[self.layer]
            s = (x.float() @ self.skip.to(x.device).T).to(tensor.dtype)  # [B,S,D]
            out = s + (tensor - s).detach()
        self.tape.outputs[self.layer] = out
        return out


def check_transcoders(model, transcoders: CrossLayerTranscoder) -> None:
    """ConfigError unless ``transcoders`` fit ``model`` (layers, width, hook points)."""
    if not isinstance(transcoders, CrossLayerTranscoder):
        raise ConfigError(f"transcoders must be a torch_mi.dictionaries.CrossLayerTranscoder "
                          f"(or a folder path), got {type(transcoders).__name__}")
    c = transcoders.config
    if c.n_layers != model.num_layers:
        raise ConfigError(f"the transcoders have {c.n_layers} layers but the model has "
                          f"{model.num_layers}; use the transcoders trained for this model")
    if c.d_model != model.hidden_size:
        raise ConfigError(f"the transcoders read d_model={c.d_model} vectors but the model's "
                          f"residual stream has {model.hidden_size}; use the transcoders "
                          f"trained for this model")
    points = model.hook_points()
    needed = [as_point("blocks.0.attn.hook_pattern"), as_point("ln_final.hook_scale"),
              c.input_point(0), c.output_point(0)]
    missing = [str(p) for p in needed if p not in points]
    if missing:
        raise ConfigError(f"attribution needs a transformer backend with the hook points "
                          f"{missing}; this model ({type(model.backend).__name__}) lacks them")


def skip_matrices(transcoders: CrossLayerTranscoder) -> list[torch.Tensor | None]:
    """Each layer's ``W_skip`` [D, D] fp32, or None."""
    n = transcoders.config.n_layers
    if not transcoders.config.has_skip:
        return [None] * n
    return [transcoders.load_skip_matrix(layer) for layer in range(n)]


def replacement_spec(model, transcoders: CrossLayerTranscoder, *, splice_transcoders: bool = False,
                     skips: list[torch.Tensor | None] | None = None) -> tuple[HookSpec, Tape]:
    """The HookSpec of the local replacement model and the tape it fills.

    ``splice_transcoders=True`` also rebuilds every MLP output as reconstruction + error
    (the dictionaries splice, run before the linearisation); the values stay the model's.
    """
    check_transcoders(model, transcoders)
    c, tape, spec = transcoders.config, Tape(), HookSpec()
    skips = skip_matrices(transcoders) if skips is None else skips
    if splice_transcoders:
        splice(spec, transcoders, use_error_term=True)
    points = model.hook_points()
    spec.intervene("hook_embed", Record(tape, "embed"))
    for layer in range(c.n_layers):
        spec.intervene(f"blocks.{layer}.attn.hook_pattern", Detach())
        for norm in FROZEN_NORMS:
            point = as_point(f"blocks.{layer}.{norm}.hook_scale")
            if point in points:
                spec.intervene(point, Detach())
        spec.intervene(c.input_point(layer), Record(tape, "inputs", layer))
        spec.intervene(c.output_point(layer), LinearSkip(tape, layer, skips[layer]))
    spec.intervene("ln_final.hook_scale", Detach())
    spec.intervene("hook_final_norm", Record(tape, "final"))
    return spec, tape


def replacement_forward(model, input_ids: torch.Tensor, transcoders: CrossLayerTranscoder, *,
                        splice_transcoders: bool = False, last_logits_only: bool = False,
                        skips: list[torch.Tensor | None] | None = None):
    """Run the local replacement model on ``input_ids`` [B,S] with autograd on.

    Returns ``(logits, tape)``: logits [B,S,V] (or [B,1,V]) equal to the model's, and the
    tape whose tensors are nodes of a graph that is linear in the residual stream.
    """
    spec, tape = replacement_spec(model, transcoders, splice_transcoders=splice_transcoders,
                                  skips=skips)
    if torch.is_inference_mode_enabled():
        raise ConfigError("the replacement model records an autograd graph; call it outside "
                          "torch.inference_mode()")
    with torch.enable_grad():
        cache = model.forward(input_ids, spec, last_logits_only=last_logits_only)
    return cache.output(), tape


__all__ = ["Detach", "LinearSkip", "Record", "Tape", "check_transcoders", "replacement_forward",
           "replacement_spec", "skip_matrices"]
