"""Per-call hook dispatch: the only hook logic model code ever sees is ``hooks.fire(p, t)``.

A :class:`HookRuntime` is built at the start of a forward from the caller's HookSpec after
checking every point (and every backend spec) against the model. An empty spec gets
:data:`NO_HOOKS`, whose ``fire`` returns its argument untouched: no clone, no allocation,
no dictionary entry.

Every intervention's result is checked at the point that produced it (a tensor of the
activation's shape, dtype and device), so a bad result is reported there and not as a
matmul error layers later. With ``HookSpec(check_finite=True)`` every fired tensor is also
checked for NaN/inf (see :mod:`torch_mi.hooks.finite`).

Interventions may provide extra points (``Intervention.provided_points``, e.g. a dictionary
splice's internals): the spec may capture or intervene there, validation accepts them while
such an intervention is in the spec, and the intervention fires them through ``call.fire``,
which runs this runtime's ``fire``.

Gradients (``keep_grad=True`` captures and ``capture_grad`` points) are taken through a
tap at the point (:mod:`torch_mi.hooks.grad`), before its interventions: the gradient is
d loss / d (pre-intervention activation), and it flows back through Add/Scale/Apply while a
Replace upstream cuts it.
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from ..errors import HookError, did_you_mean
from .cache import HookCache
from .call import ForwardCall
from .finite import FiniteChecker
from .grad import tap
from .interventions import Intervention, check_result
from .points import HookPoint, as_point, layer_hint, shown
from .spec import HookSpec


class _Site:
    """What happens at one active point: capture? which interventions, in order."""

    __slots__ = ("capture", "clone", "grad", "interventions")

    def __init__(self) -> None:
        self.capture = False
        self.clone = False
        self.grad = False  # capture_grad: store the gradient here on backward
        self.interventions: list[Intervention] = []


class HookRuntime:
    """Dispatches captures and interventions for one forward call."""

    check_finite = False  # True when a FiniteChecker watches every fired tensor

    def __init__(self, spec: HookSpec, cache: HookCache) -> None:
        if spec.needs_grad and not torch.is_grad_enabled():
            raise HookError(
                "this HookSpec asks for gradients (keep_grad=True or capture_grad) but grad "
                "mode is off (torch.no_grad() or torch.inference_mode()); run it through "
                "MIModel.forward, which enables grad for such a spec, or under "
                "torch.enable_grad()")
        self.call = ForwardCall(cache, spec.keep_grad, dict(spec.backend_specs()), self)
        self._finite = FiniteChecker() if spec.check_finite else None
        self.check_finite = self._finite is not None
        sites: dict[HookPoint, _Site] = {}
        for point in spec.captures():
            sites.setdefault(point, _Site()).capture = True
        for point in spec.grad_captures():
            sites.setdefault(point, _Site()).grad = True
        for point, intervention in spec.interventions():
            site = sites.setdefault(point, _Site())
            site.interventions.append(intervention)
            # A kind that may write into its input must not change the captured value.
            site.clone = site.clone or type(intervention).mutates_input
        self._sites = sites

    @property
    def keep_grad(self) -> bool:
        return self.call.keep_grad

    def backend_spec(self, name: str) -> object | None:
        """A backend spec of this call (None if absent); backends read what they honour."""
        return self.call.backend_specs.get(name)

    def is_active(self, point: HookPoint) -> bool:
        """True if the point is captured or intervened on in this call."""
        return point in self._sites

    def intervenes(self, point: HookPoint) -> bool:
        """True if this call changes the tensor at ``point``."""
        site = self._sites.get(point)
        return site is not None and bool(site.interventions)

    def fire(self, point: HookPoint, tensor: torch.Tensor) -> torch.Tensor:
        """Capture, then apply this point's interventions in registration order."""
        site = self._sites.get(point)
        finite = self._finite
        if finite is not None:
            finite.check(point, tensor)
        if site is None:
            return tensor
        if site.capture or site.grad:
            tensor = self._record(site, point, tensor)
        call = self.call
        for intervention in site.interventions:
            result = intervention.apply(tensor, point, call)
            tensor = check_result(intervention, point, tensor, result)
            if finite is not None:
                finite.check_intervention(point, intervention, tensor)
        return tensor

    def _record(self, site: _Site, point: HookPoint, tensor: torch.Tensor) -> torch.Tensor:
        """Tap (for gradients) and capture; returns the tensor the interventions get."""
        call = self.call
        graph = call.keep_grad and site.capture
        if site.grad or graph:
            tensor = tap(tensor)
            if tensor.requires_grad:  # integer tensors have no gradient
                # capture_grad stores it in the cache; a keep_grad capture keeps .grad.
                call.cache.watch_grad(point, tensor, store=site.grad)
        if not site.capture:
            return tensor
        copy = site.clone and bool(site.interventions)  # an Apply may write into its input
        if graph:  # the captured tensor is the graph node; interventions get a copy
            call.cache.store(point, tensor)
            return tensor.clone() if copy else tensor
        kept = tensor.detach()
        call.cache.store(point, kept.clone() if copy else kept)
        return tensor

    def require_finite(self, point: HookPoint, tensor: torch.Tensor, what: str) -> None:
        """With check_finite, HookError if ``tensor`` (a side input of ``point``, such as
        the keys a KV cache holds from earlier calls) is not finite; otherwise nothing."""
        if self._finite is not None:
            self._finite.check(point, tensor, what)


class _NoHooks(HookRuntime):
    """The empty spec: every call is a pass-through."""

    def __init__(self) -> None:  # no spec, no cache, no sites
        self.call = ForwardCall(HookCache(), False)
        self._sites = {}
        self._finite = None

    def is_active(self, point: HookPoint) -> bool:
        return False

    def intervenes(self, point: HookPoint) -> bool:
        return False

    def fire(self, point: HookPoint, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def require_finite(self, point: HookPoint, tensor: torch.Tensor, what: str) -> None:
        return None


NO_HOOKS: HookRuntime = _NoHooks()


def validate_spec(spec: HookSpec, valid: Collection[HookPoint], num_layers: int,
                  honours: Collection[str] = ()) -> None:
    """Raise HookError for any point of ``spec`` this model does not have, and for any
    backend spec the backend does not honour (``honours`` lists those it does).

    Out-of-range layers name the valid range; unknown names get close-match suggestions.
    """
    for name, value in spec.backend_specs().items():
        if name not in honours:
            raise HookError(
                f"this model cannot honour the HookSpec entry {name!r} ({type(value).__name__}): "
                f"its backend has no such mechanism (state knockout and steering need a "
                f"recurrent backend such as RWKV). Remove it from the HookSpec.")
    provided = provided_points(spec)
    for point in spec.points():
        if point in valid or point in provided:
            continue
        if point.layer is not None and not 0 <= point.layer < num_layers:
            raise HookError(
                f"hook point '{point}': layer {point.layer} is out of range; this model has "
                f"{num_layers} layers (0..{num_layers - 1})"
            )
        if point.layer is not None:
            what = f"this model has no '{point}' ({point.variant} is not computed by this backend)"
        else:
            what = f"unknown hook point {shown(str(point))}"
        raise HookError(what + "." + (layer_hint(point) or _suggest(point, [*valid, *provided]))
                        + _provided_hint(point, valid, provided)
                        + " See model.hook_points() for the list.")


def provided_points(spec: HookSpec) -> dict[HookPoint, HookPoint]:
    """The extra points the spec's interventions provide (their internals), each mapped to
    the point whose intervention provides it."""
    out: dict[HookPoint, HookPoint] = {}
    for host, intervention in spec.interventions():
        for point in intervention.provided_points(host):
            out.setdefault(as_point(point), host)
    return out


def _provided_hint(point: HookPoint, valid: Collection[HookPoint],
                   provided: Collection[HookPoint]) -> str:
    """For ``'<model point>.<name>'``: such names exist only while an intervention at that
    point provides them (a dictionary splice's ``hook_sae_*``)."""
    host, dot, name = str(point).rpartition(".")
    if not dot or not host.strip() or as_point(host) not in valid:
        return ""
    under = sorted(str(p).rpartition(".")[2] for p in provided
                   if str(p).rpartition(".")[0] == host)
    if under:
        return f" The interventions at '{host}' provide: {', '.join(under)}."
    return (f" '{host}' is a hook point of this model, but no intervention at it provides "
            f"'{name}' (a dictionary splice, mi.dictionaries.splice, provides "
            f"'{host}.hook_sae_acts_post' and the like).")


def _suggest(point: HookPoint, valid: Collection[HookPoint]) -> str:
    """Close matches among the valid names (none for very long strings: difflib's cost
    grows with the product of the lengths)."""
    text = str(point)
    if len(text) > 200:
        return ""
    return did_you_mean(text, [str(p) for p in valid])


def make_runtime(spec: HookSpec | None, valid: Collection[HookPoint], num_layers: int,
                 honours: Collection[str] = ()) -> tuple[HookRuntime, HookCache]:
    """Validate ``spec`` and return the runtime plus the cache it fills."""
    cache = HookCache()
    if spec is None:
        return NO_HOOKS, cache
    if not isinstance(spec, HookSpec):
        raise HookError(f"hooks must be a HookSpec (or None), got {type(spec).__name__}; "
                        f"build one with mi.HookSpec().capture(...).intervene(...)")
    if spec.is_empty():
        return NO_HOOKS, cache
    validate_spec(spec, valid, num_layers, honours)
    return HookRuntime(spec, cache), cache
