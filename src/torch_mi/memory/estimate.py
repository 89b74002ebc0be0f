"""How much memory a forward will need, computed BEFORE running it.

Four categories that add up to ``total_bytes``:

* ``weights``: parameter storage (tied or shared weights counted once);
* ``captures``: the storage the HookSpec's captures keep (shared storage counted once);
* ``logits``: the output [B,S,V] in the model dtype;
* ``transient``: what the call holds on top of those at its peak moment (the largest
  layer working set, or the head's, plus RoPE tables and masks), freed when it returns.

``forward_bytes`` (everything but the weights) is what to compare with free RAM/VRAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..backends.protocol import LayerCost, SupportsMemoryPlan
from ..errors import InputError, MemoryReportError
from ..hooks.runtime import validate_spec
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from .snapshot import MIB

CATEGORIES = ("weights", "captures", "logits", "transient")


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of parameters and buffers, each storage counted once (tied embeddings)."""
    seen: set[tuple] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        ptr = tensor.data_ptr()
        key = (tensor.device, ptr, tensor.numel()) if ptr else ("meta", id(tensor))
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted memory of one forward call (bytes); see the module docstring."""

    batch: int
    seq_len: int
    dtype: str
    weights_bytes: int
    captures_bytes: int
    logits_bytes: int
    transient_bytes: int
    per_point: dict[str, int] = field(default_factory=dict)  # captured point -> its shape's bytes
    layers: tuple[LayerCost, ...] = ()
    peak_at: str = "head"  # where the forward peaks: "layer N" or "head"

    @property
    def forward_bytes(self) -> int:
        """Everything the call adds to memory at its peak (all but the weights)."""
        return self.captures_bytes + self.logits_bytes + self.transient_bytes

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.forward_bytes

    @property
    def retained_bytes(self) -> int:
        """What stays allocated after the call: the returned cache (captures + logits)."""
        return self.captures_bytes + self.logits_bytes

    @property
    def explicit_layers(self) -> tuple[int, ...]:
        """Layers that materialise scores/pattern (explicit attention core)."""
        return tuple(cost.layer for cost in self.layers if cost.explicit)

    def breakdown(self) -> dict[str, int]:
        return {"weights": self.weights_bytes, "captures": self.captures_bytes,
                "logits": self.logits_bytes, "transient": self.transient_bytes}

    def largest_layer(self) -> LayerCost | None:
        return max(self.layers, key=lambda c: c.working_set_bytes, default=None)

    def to_dict(self) -> dict:
        largest = self.largest_layer()
        return {
            "batch": self.batch, "seq_len": self.seq_len, "dtype": self.dtype,
            "breakdown_bytes": self.breakdown(),
            "forward_bytes": self.forward_bytes, "total_bytes": self.total_bytes,
            "retained_bytes": self.retained_bytes,
            "forward_mb": self.forward_bytes / MIB, "total_mb": self.total_bytes / MIB,
            "peak_at": self.peak_at,
            "explicit_attention_layers": list(self.explicit_layers),
            "largest_layer_working_set": None if largest is None else {
                "layer": largest.layer, "explicit": largest.explicit,
                "bytes": largest.working_set_bytes},
            "num_captures": len(self.per_point),
            "per_point_bytes": dict(self.per_point),
        }

    def format(self) -> str:
        """A small text table (MB = MiB)."""
        n_exp, n_layers = len(self.explicit_layers), len(self.layers)
        lines = [f"Memory estimate: batch {self.batch} x {self.seq_len} tokens, {self.dtype}, "
                 f"{n_exp}/{n_layers} layers on the explicit attention path"]
        notes = {"weights": "parameters, shared storage once",
                 "captures": f"{len(self.per_point)} captured points",
                 "logits": "output [B,S,V]", "transient": f"freed on return; peak in {self.peak_at}"}
        for name, nbytes in self.breakdown().items():
            lines.append(f"  {name:<10} {nbytes / MIB:>11,.1f} MB  ({notes[name]})")
        lines.append(f"  {'forward':<10} {self.forward_bytes / MIB:>11,.1f} MB  (all but weights)")
        lines.append(f"  {'total':<10} {self.total_bytes / MIB:>11,.1f} MB")
        return "\n".join(lines)


def _backend(model: LanguageModel) -> SupportsMemoryPlan:
    backend = getattr(model, "backend", model)  # an MIModel, or a backend itself
    if not isinstance(backend, SupportsMemoryPlan):
        raise MemoryReportError(
            f"estimate_memory needs a backend with an analytic memory plan; "
            f"{type(backend).__name__} has none. Measure it instead with "
            f"torch_mi.memory.track_memory()")
    return backend


def estimate_memory(model: LanguageModel, hooks: HookSpec | None, seq_len: int,
                    batch: int = 1) -> MemoryEstimate:
    """Bytes a ``forward`` of ``batch`` x ``seq_len`` tokens with ``hooks`` will hold.

    ``model`` is an MIModel or a backend with a memory plan. HookError for points the model does
    not have (as ``forward`` would raise); InputError for a non-positive size.
    """
    for name, value in (("seq_len", seq_len), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    backend = _backend(model)
    spec = HookSpec() if hooks is None else hooks
    if not isinstance(spec, HookSpec):
        raise InputError(f"hooks must be a HookSpec or None, got {type(spec).__name__}")
    points = backend.hook_points()
    validate_spec(spec, points, backend.num_layers)
    provided = sorted({str(p) for p in spec.points() if p not in points})
    if provided:  # e.g. a splice's hook_sae_* internals: valid, but the plan has no shapes
        raise MemoryReportError(
            f"the analytic estimate has no shape for {', '.join(provided[:5])}"
            f"{' ...' if len(provided) > 5 else ''} (points an intervention provides, not the "
            f"model's); drop them from the spec to estimate the rest, or measure the real "
            f"forward with torch_mi.memory.measure_forward")
    plan = backend.memory_plan(spec, batch, seq_len)
    costs = plan.layer_costs()
    peak, where = plan.forward_peak()
    captures = plan.captured_bytes()
    return MemoryEstimate(
        batch=batch, seq_len=seq_len, dtype=str(backend.dtype).removeprefix("torch."),
        weights_bytes=weight_bytes(backend), captures_bytes=captures,
        logits_bytes=plan.logits_bytes, transient_bytes=peak - captures - plan.logits_bytes,
        per_point={str(p): plan.point_bytes(p) for p in spec.captures()},
        layers=tuple(costs), peak_at=where)
