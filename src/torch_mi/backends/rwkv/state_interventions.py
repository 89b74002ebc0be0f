"""RWKV state knockout and steering: per-layer, per-position scales of the state write.

A :class:`StateKnockoutSpec` / :class:`StateSteeringSpec` on the HookSpec becomes, for each
targeted layer, a vector ``scale`` [S] that multiplies the ``kᵀv`` write of each position
inside the WKV recurrence (inventory §3.6, §5.10):

* knockout: ``scale = 0`` at the listed positions (decay still applies; for RWKV-7 the
  rank-1 delta-rule term is still applied);
* steering: ``scale = spec.scale`` at the listed positions;
* priority per layer: if the knockout targets a layer, steering is ignored for that
  whole layer (even at positions only the steering lists);
* untouched: RWKV-6's bonus ``u ⊙ kᵀv`` in the output of the token itself and RWKV-7's
  bonus/correction term ``Σ(r⊙k⊙r_k)·v``. So on RWKV-6 a knocked-out token's own output is
  unchanged and only later tokens lose it; on RWKV-7 the output is read from the updated
  state, so the token itself changes too.

Positions count within the current call's tokens (with ``forward(..., state=)``, position 0
is the first new token). Unlike upstream, ``forward`` validates the specs (InterventionError
for out-of-range positions or layers, empty position lists) before any work.
"""

from __future__ import annotations

import math

import torch

from ...errors import HookError, InterventionError
from ...hooks.runtime import HookRuntime
from ...hooks.spec import STATE_KNOCKOUT, STATE_STEERING
from ...hooks.state import StateKnockoutSpec, StateSteeringSpec

STATE_SPECS = (STATE_KNOCKOUT, STATE_STEERING)  # the backend specs GenericRwkv honours


def write_scales(hooks: HookRuntime, num_layers: int, seq_len: int,
                 device: torch.device) -> dict[int, torch.Tensor]:
    """Validate the call's state specs and return {layer: scale [S] fp32} for every layer
    whose state write they change (empty when there are none, or only no-op steering)."""
    knock = _spec(hooks, STATE_KNOCKOUT, StateKnockoutSpec)
    steer = _spec(hooks, STATE_STEERING, StateSteeringSpec)
    for spec in (knock, steer):
        if spec is not None:
            spec.validate(num_layers, seq_len)
    if steer is not None and not math.isfinite(steer.scale):
        raise InterventionError(f"StateSteeringSpec scale must be finite, got {steer.scale}")
    scales: dict[int, torch.Tensor] = {}
    knocked = set(knock.layer_spec.resolve(num_layers)) if knock is not None else set()
    for layer in knocked:
        scales[layer] = _scale_vector(knock.positions_list, 0.0, seq_len, device)
    if steer is not None and steer.scale != 1.0:  # scale 1 is exactly no steering
        for layer in steer.layer_spec.resolve(num_layers):
            if layer not in knocked:  # knockout wins for the whole layer
                scales[layer] = _scale_vector(steer.positions_list, steer.scale, seq_len,
                                              device)
    return scales


def _spec(hooks: HookRuntime, name: str, kind: type) -> object | None:
    value = hooks.backend_spec(name)
    if value is not None and not isinstance(value, kind):
        raise HookError(f"the HookSpec entry {name!r} must be a {kind.__name__}, got "
                        f"{type(value).__name__}; set it with HookSpec.set_{name}(...)")
    return value


def _scale_vector(positions: list[int], value: float, seq_len: int,
                  device: torch.device) -> torch.Tensor:
    scale = torch.ones(seq_len, dtype=torch.float32, device=device)  # [S]
    scale[list(positions)] = value
    return scale
