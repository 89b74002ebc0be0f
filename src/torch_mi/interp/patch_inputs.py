"""What every head/position patching analysis checks first: the prompt pair, the metric,
the kind of activation (and where its heads and positions lie), layers, heads, positions.

Every check raises :class:`InputError` naming the argument and the valid range, before
any forward runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..hooks.points import STREAM_POINTS, HookPoint, point_kind
from ..model import LanguageModel

Metric = Callable[[torch.Tensor], torch.Tensor | float]  # logits [B,S|1,V] -> scalar


@dataclass(frozen=True)
class PatchKind:
    """An activation kind: its hook point variant and the dims of heads and positions
    (batch is dim 0; ``head_dim`` None for residual-stream kinds)."""

    name: str
    variant: str
    pos_dim: int
    head_dim: int | None = None

    def point(self, layer: int) -> HookPoint:
        return HookPoint(self.variant, layer)


HEAD_KINDS: dict[str, PatchKind] = {
    "z": PatchKind("z", "AttnZ", 1, 2),  # [B,S,H,d]
    "q": PatchKind("q", "AttnQ", 1, 2),  # [B,S,H,d]
    "k": PatchKind("k", "AttnK", 1, 2),  # [B,S,Hkv,d]: per KV head
    "v": PatchKind("v", "AttnV", 1, 2),  # [B,S,Hkv,d]: per KV head
    "result": PatchKind("result", "AttnResult", 1, 2),  # [B,S,H,D]
    "pattern": PatchKind("pattern", "AttnPattern", 2, 1),  # [B,H,Sq,Sk]: query positions
}
POSITION_KINDS: dict[str, PatchKind] = {
    name: PatchKind(name, kind.variant, 1) for name, kind in STREAM_POINTS.items()}  # [B,S,D]


@dataclass
class PromptPair:
    """Clean and corrupted token ids [B,S] of equal shape, on the model's device."""

    clean: torch.Tensor
    corrupted: torch.Tensor

    @property
    def batch(self) -> int:
        return self.clean.shape[0]

    @property
    def seq_len(self) -> int:
        return self.clean.shape[1]


def _ids(model: LanguageModel, prompts, what: str) -> torch.Tensor:
    if isinstance(prompts, torch.Tensor):
        ids = prompts if prompts.dim() == 2 else prompts.reshape(1, -1)
        return ids.to(model.device)
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError(f"{what} must be a string, a list of strings or token ids [B,S]")
    tok = model.require_tokenizer()
    encoded = [tok.encode(t) for t in texts]
    if len({len(e) for e in encoded}) != 1:
        raise InputError(f"the {what} prompts have different token counts "
                         f"({[len(e) for e in encoded]}); patching needs prompts of one length")
    return torch.tensor(encoded, dtype=torch.long, device=model.device)


def prompt_pair(model: LanguageModel, clean, corrupted) -> PromptPair:
    """Token ids of both prompts; InputError unless they have the same [B,S] shape."""
    pair = PromptPair(_ids(model, clean, "clean"), _ids(model, corrupted, "corrupted"))
    if pair.clean.shape != pair.corrupted.shape or pair.clean.numel() == 0:
        raise InputError(f"clean {list(pair.clean.shape)} and corrupted "
                         f"{list(pair.corrupted.shape)} token ids differ in shape (different "
                         f"token counts?); position-wise patching needs equal lengths")
    return pair


def resolve_kind(kind: str, kinds: dict[str, PatchKind]) -> PatchKind:
    if not isinstance(kind, str) or kind not in kinds:
        raise InputError(f"unknown patch kind {kind!r}; choose one of {sorted(kinds)}")
    return kinds[kind]


def num_heads(model: LanguageModel, kind: PatchKind) -> int:
    """Heads of ``kind`` (KV heads for k and v), read from the model's hook table."""
    point = kind.point(0)
    shapes = model.hook_points()
    if point not in shapes:
        raise InputError(f"this model has no '{point}' ({point_kind(kind.variant).doc}); "
                         f"patch kind {kind.name!r} is not available for it")
    return int(shapes[point][kind.head_dim])


def check_indices(values, size: int, what: str, allow_negative: bool = False) -> list[int]:
    """``values`` (None = all) as a list of ints in range; InputError naming the range."""
    if values is None:
        return list(range(size))
    if isinstance(values, int):
        values = [values]
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{what} must be ints, got {value!r}")
        low = -size if allow_negative else 0
        if not low <= value < size:
            raise InputError(f"{what} {value} is out of range: valid are {low}..{size - 1}")
        out.append(value % size)
    if not out:
        raise InputError(f"{what}: the list is empty; pass None for all")
    return out


def check_positions(positions, seq_len: int) -> list[int] | None:
    """None = every position at once; "each" = every position apart; ints (negative count
    from the end) = those positions apart."""
    if positions is None:
        return None
    if positions == "each":
        return list(range(seq_len))
    if isinstance(positions, str):
        raise InputError(f"positions must be None, 'each' or a list of ints, got {positions!r}")
    return check_indices(positions, seq_len, "position", allow_negative=True)


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int (patches per forward), got "
                         f"{batch_size!r}")
    return batch_size


def check_metric(metric) -> Metric:
    if not callable(metric):
        raise InputError(f"metric must be a function of the logits returning a scalar, got "
                         f"{type(metric).__name__}")
    return metric


def scalar(value, what: str = "metric") -> torch.Tensor:
    """The metric's value as a 0-dim float tensor; InputError if it is not one number."""
    tensor = torch.as_tensor(value)
    if tensor.numel() != 1:
        raise InputError(f"{what} must return a scalar (reduce over the batch, e.g. with "
                         f".mean()), got shape {list(tensor.shape)}")
    return tensor.reshape(())

