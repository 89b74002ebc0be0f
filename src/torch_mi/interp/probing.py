"""Linear probes: is a property linearly readable from a layer's activations?

``collect_activations`` runs ONE batched forward (left-padded, with an attention mask, so
"last" is the last real token of every row) and returns [n, D] features per layer;
``train_probe`` fits a scikit-learn logistic (accuracy) or ridge (R^2) probe on a seeded
train/test split; ``probe_layers`` does both for every layer with the same split.

scikit-learn is an optional dependency: ``pip install torch-mi[probing]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, HookError, InputError
from ..hooks.points import STREAM_POINTS, HookPoint
from ..hooks.spec import HookSpec
from ..model import LanguageModel
from ..tokenizer import pad_batch

PROBE_HOOKS = {**{name: kind.variant for name, kind in STREAM_POINTS.items()},
               "mlp_pre": "MlpPre", "mlp_hidden": "MlpHidden", "mlp_post": "MlpPost"}
PROBE_KINDS = ("logistic", "ridge")
PROGRESS_MIN_LAYERS = 8  # show a progress bar from this many layers on

Position = str | int


@dataclass
class ProbeResult:
    """A fitted probe and its scores (accuracy for logistic, R^2 for ridge)."""

    layer: int | None
    kind: str
    train_score: float
    test_score: float | None  # None when test_size == 0
    n_train: int
    n_test: int
    coef: torch.Tensor  # as scikit-learn gives it: [D] (ridge), [1, D] (binary), [C, D]
    intercept: torch.Tensor  # [1] or [C]
    classes: list | None = None  # logistic only
    estimator: Any = field(default=None, repr=False)  # the fitted scikit-learn model

    def to_dict(self) -> dict:
        """JSON-ready summary (the estimator is left out)."""
        return {"layer": self.layer, "kind": self.kind, "train_score": self.train_score,
                "test_score": self.test_score, "n_train": self.n_train, "n_test": self.n_test,
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "classes": self.classes}


def _sklearn():
    """Import the scikit-learn parts lazily, with an install hint when missing."""
    try:
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ConfigError("linear probing needs scikit-learn, an optional dependency: "
                          "pip install torch-mi[probing]") from exc
    return LogisticRegression, Ridge, train_test_split


# ---- activations ----------------------------------------------------------------------------
def _batch(model: LanguageModel, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask [n, T] from texts, id lists or an [n, S] tensor."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() != 2 or inputs.shape[0] == 0:
            raise InputError(f"token ids must be [n, seq], got shape {list(inputs.shape)}")
        return inputs.long(), torch.ones_like(inputs, dtype=torch.long)
    if isinstance(inputs, str) or not isinstance(inputs, Sequence) or not inputs:
        raise InputError("collect_activations needs a non-empty list of texts or of token-id lists")
    if all(isinstance(x, str) for x in inputs):
        return model.require_tokenizer().encode_batch(list(inputs))
    rows = [[int(i) for i in row] for row in inputs]
    if not all(rows):
        raise InputError("every token-id list must hold at least one token")
    tok = model.tokenizer
    return pad_batch(rows, tok.padding_id if tok is not None else 0, "left")


def _select(acts: torch.Tensor, mask: torch.Tensor, position: Position) -> torch.Tensor:
    """Per-row features [n, D] from left-padded activations [n, T, D] and mask [n, T]."""
    lengths = mask.sum(dim=1)  # [n]
    if position == "last":
        return acts[:, -1]
    if position == "mean":
        weights = mask.to(acts.dtype).unsqueeze(-1)  # [n, T, 1]
        return (acts * weights).sum(dim=1) / lengths.unsqueeze(-1).to(acts.dtype)
    width = acts.shape[1]
    index = width - lengths + position if position >= 0 else torch.full_like(lengths, width + position)
    rows = torch.arange(acts.shape[0], device=acts.device)
    return acts[rows, index.to(acts.device)]


def _check_position(position: Position, mask: torch.Tensor) -> None:
    shortest = int(mask.sum(dim=1).min())
    if shortest == 0:
        raise InputError("an input encodes to no tokens; give non-empty texts or id lists")
    if position in ("last", "mean"):
        return
    if not isinstance(position, int) or isinstance(position, bool):
        raise InputError(f"position must be 'last', 'mean' or an int, got {position!r}")
    if not -shortest <= position < shortest:
        raise InputError(f"position {position} is outside the shortest input ({shortest} tokens);"
                         f" use a position in {-shortest}..{shortest - 1}")


def _hook_points(model: LanguageModel, hook_kind: str, layers: Sequence[int] | None) -> dict[int, HookPoint]:
    if hook_kind not in PROBE_HOOKS:
        raise InputError(f"unknown hook_kind {hook_kind!r}; choose one of {sorted(PROBE_HOOKS)}")
    layers = list(range(model.num_layers)) if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < model.num_layers]
    if bad or not layers:
        raise HookError(f"layers {bad or '[]'} are not valid for this model; use layers in "
                        f"0..{model.num_layers - 1}")
    return {layer: HookPoint(PROBE_HOOKS[hook_kind], layer) for layer in layers}


def collect_activations(model: LanguageModel, texts_or_ids, hook_kind: str = "resid_post",
                        position: Position = "last",
                        layers: Sequence[int] | None = None) -> dict[int, torch.Tensor]:
    """Features per layer: ``{layer: [n, D] float32 on the CPU}`` from one batched forward.

    ``position``: "last" (last real token), "mean" (mean over real tokens) or an int
    indexing each input's real tokens (negative from the end).
    """
    points = _hook_points(model, hook_kind, layers)
    ids, mask = _batch(model, texts_or_ids)  # [n, T] each
    _check_position(position, mask)
    with torch.no_grad():
        cache = model.forward(ids.to(model.device), HookSpec().capture(*points.values()),
                              attention_mask=mask.to(model.device))
        mask = mask.to(model.device)
        return {layer: _select(cache.require(point).float(), mask, position).cpu()
                for layer, point in points.items()}


# ---- probes ---------------------------------------------------------------------------------
def _check_labels(labels, n: int, kind: str) -> np.ndarray:
    """Labels as a 1-D array of length ``n``; InputError for a bad kind or labels."""
    if kind not in PROBE_KINDS:
        raise InputError(f"unknown probe kind {kind!r}; choose one of {list(PROBE_KINDS)}")
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise InputError(f"need one label per example: {n} examples but labels of shape "
                         f"{list(y.shape)}")
    if kind == "logistic" and len(np.unique(y)) < 2:
        raise InputError("a logistic probe needs at least two distinct labels")
    return y


def _as_arrays(features, labels, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if callable(getattr(features, "probe_features", None)):  # a harvest ActivationStore / view
        features = features.probe_features()
    try:
        x = features.detach().float().cpu().numpy() if isinstance(features, torch.Tensor) \
            else np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"features must be a numeric [n, D] array: {exc}") from None
    if x.ndim != 2:
        raise InputError(f"features must be [n, D], got shape {list(x.shape)}")
    return x, _check_labels(labels, len(x), kind)


def _split(x, y, kind: str, test_size: float, seed: int):
    if not 0 <= test_size < 1:
        raise InputError(f"test_size must be in [0, 1), got {test_size!r}")
    if test_size == 0:
        return x, x[:0], y, y[:0]
    _, _, train_test_split = _sklearn()
    stratify = y if kind == "logistic" else None
    try:
        return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise InputError(f"cannot split {len(y)} examples with test_size={test_size}: {exc}. "
                         f"Give more examples per label or change test_size") from exc


def train_probe(features, labels, kind: str = "logistic", test_size: float = 0.25,
                seed: int = 0, *, layer: int | None = None, **sklearn_kwargs) -> ProbeResult:
    """Fit a linear probe on a seeded split (stratified by label for logistic probes).

    ``features``: [n, D] (tensor or array), or a harvest ``ActivationStore`` with one point
    / ``store.view(point)`` (one row per stored position, padding left out).

    Extra keyword arguments go to ``LogisticRegression`` (default ``max_iter=1000``) or
    ``Ridge``.
    """
    x, y = _as_arrays(features, labels, kind)
    x_train, x_test, y_train, y_test = _split(x, y, kind, test_size, seed)
    logistic, ridge, _ = _sklearn()
    if kind == "logistic":
        estimator = logistic(**{"max_iter": 1000, "random_state": seed, **sklearn_kwargs})
    else:
        estimator = ridge(**sklearn_kwargs)
    try:
        estimator.fit(x_train, y_train)
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot fit a {kind} probe: {exc}") from exc
    test = float(estimator.score(x_test, y_test)) if len(y_test) else None
    return ProbeResult(
        layer=layer, kind=kind, train_score=float(estimator.score(x_train, y_train)),
        test_score=test, n_train=len(y_train), n_test=len(y_test),
        coef=torch.as_tensor(np.asarray(estimator.coef_)),
        intercept=torch.as_tensor(np.atleast_1d(estimator.intercept_)),
        classes=estimator.classes_.tolist() if kind == "logistic" else None,
        estimator=estimator)


def probe_layers(model: LanguageModel, texts, labels, *, kind: str = "logistic",
                 hook_kind: str = "resid_post", position: Position = "last",
                 layers: Sequence[int] | None = None,
                 test_size: float = 0.25, seed: int = 0, progress: bool | None = None,
                 **sklearn_kwargs) -> list[ProbeResult]:
    """Train one probe per layer on the same split; a progress bar shows for many layers
    (``progress=None``) or when forced with ``progress=True``."""
    _sklearn()
    labels = _check_labels(labels, len(texts), kind)
    features = collect_activations(model, texts, hook_kind, position, layers)
    show = len(features) >= PROGRESS_MIN_LAYERS if progress is None else progress
    return [train_probe(feats, labels, kind, test_size, seed, layer=layer, **sklearn_kwargs)
            for layer, feats in _progress(features.items(), len(features), show)]


def _progress(items, total: int, show: bool):
    if not show:
        yield from items
        return
    from rich.progress import track

    yield from track(items, total=total, description="Probing layers", transient=True)
