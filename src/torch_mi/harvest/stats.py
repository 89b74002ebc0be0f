"""Per-feature statistics of dictionary activations, computed per chunk and merged.

Every statistic is mergeable (counts and sums add, maxima take the max, histograms add,
top-k lists are re-ranked), so per-shard partials written by any worker, in any order,
merge to the single-pass result. Sums are float64 so the merge order barely matters.

Firing means activation > 0. The histogram counts firing activations in fixed log-spaced
bins (:data:`HIST_EDGES`; below the first edge -> bin 0, above the last -> the last bin),
fixed so that partials from different shards line up. Top-k entries are ranked by value
(largest first), then by sequence index and position (smallest first); empty slots hold
value -inf and sequence/position -1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HIST_EDGES = torch.logspace(-3, 3, 25, dtype=torch.float64)  # 4 bins per decade, 1e-3..1e3
NUM_BINS = len(HIST_EDGES) + 1
FIELDS = ("count", "total", "max", "hist", "top_val", "top_seq", "top_pos", "positions")


@dataclass
class FeatureStats:
    """Mergeable statistics of F features (shapes in comments)."""

    count: torch.Tensor  # [F] int64: positions where the feature fired
    total: torch.Tensor  # [F] float64: sum of activations
    max: torch.Tensor  # [F] float32: largest activation (0 if it never fired)
    hist: torch.Tensor  # [F, NUM_BINS] int64
    top_val: torch.Tensor  # [F, k] float32
    top_seq: torch.Tensor  # [F, k] int64
    top_pos: torch.Tensor  # [F, k] int64
    positions: torch.Tensor  # [1] int64: (unpadded) positions seen

    @classmethod
    def empty(cls, num_features: int, k: int) -> FeatureStats:
        f = num_features
        return cls(torch.zeros(f, dtype=torch.long), torch.zeros(f, dtype=torch.float64),
                   torch.zeros(f), torch.zeros(f, NUM_BINS, dtype=torch.long),
                   torch.full((f, k), float("-inf")), torch.full((f, k), -1, dtype=torch.long),
                   torch.full((f, k), -1, dtype=torch.long), torch.zeros(1, dtype=torch.long))

    @classmethod
    def from_chunk(cls, acts: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, k: int
                   ) -> FeatureStats:
        """Statistics of activations [R, F] (fp32, unpadded rows only) at sequence indices
        [R] and positions [R]."""
        rows, f = acts.shape
        out = cls.empty(f, k)
        if rows == 0:
            return out
        fired = acts > 0  # [R, F]
        out.count = fired.sum(0)
        out.total = acts.sum(0, dtype=torch.float64)
        out.max = acts.max(0).values.clamp_min(0)
        r_idx, f_idx = fired.nonzero(as_tuple=True)
        if len(r_idx):
            bins = torch.bucketize(acts[r_idx, f_idx].double(), HIST_EDGES)
            out.hist = torch.bincount(f_idx * NUM_BINS + bins, minlength=f * NUM_BINS
                                      ).view(f, NUM_BINS)
        kk = min(k, rows)
        vals, idx = acts.topk(kk, dim=0)  # [kk, F]
        keep = vals > 0
        top_val = torch.where(keep, vals, torch.tensor(float("-inf"))).T  # [F, kk]
        top_seq = torch.where(keep, seq[idx], -1).T
        top_pos = torch.where(keep, pos[idx], -1).T
        out.top_val[:, :kk], out.top_seq[:, :kk], out.top_pos[:, :kk] = _rank(
            top_val, top_seq, top_pos, kk)
        out.positions = torch.tensor([rows], dtype=torch.long)
        return out

    def merge(self, other: FeatureStats) -> FeatureStats:
        k = self.top_val.shape[1]
        top = _rank(torch.cat([self.top_val, other.top_val], 1),
                    torch.cat([self.top_seq, other.top_seq], 1),
                    torch.cat([self.top_pos, other.top_pos], 1), k)
        return FeatureStats(self.count + other.count, self.total + other.total,
                            torch.maximum(self.max, other.max), self.hist + other.hist, *top,
                            self.positions + other.positions)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{name}": getattr(self, name).contiguous() for name in FIELDS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> FeatureStats:
        return cls(*(tensors[f"{prefix}.{name}"] for name in FIELDS))

    @property
    def dead(self) -> list[int]:
        """Features that never fired."""
        return torch.nonzero(self.count == 0).flatten().tolist()


def _rank(val: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, k: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort each row by (value desc, seq asc, pos asc) and keep k: three stable sorts,
    least significant key first."""
    order = torch.arange(val.shape[1]).expand_as(val)
    for key, descending in ((pos, False), (seq, False), (val, True)):
        keyed = key.gather(1, order)
        # empty slots (seq = -1) must sort after real ones on the tie-break keys too
        if key is not val:
            keyed = torch.where(keyed < 0, torch.iinfo(torch.long).max, keyed)
        order = order.gather(1, keyed.argsort(dim=1, descending=descending, stable=True))
    order = order[:, :k]
    return val.gather(1, order), seq.gather(1, order), pos.gather(1, order)


def merge_all(parts: list[FeatureStats]) -> FeatureStats:
    """Merge partials in the given order."""
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    return merged
