"""A tqdm bar in tokens with tokens/s and an ETA.

The total is not known before the dataset is tokenised, so it is estimated from the share
of the dataset's bytes consumed so far (or taken from ``max_tokens`` when that is smaller).
"""

from __future__ import annotations

import sys


class HarvestProgress:
    """Counts harvested tokens; shown when ``show`` (None: when stderr is a terminal)."""

    def __init__(self, total_bytes: int, max_tokens: int | None, seq_len: int,
                 show: bool | None) -> None:
        self.total_bytes = max(1, total_bytes)
        self.cap = None if max_tokens is None else max_tokens // seq_len * seq_len
        self.fraction = 0.0
        self.tokens = 0
        self.bar = None
        if show is None:
            show = sys.stderr.isatty()
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.cap, unit="tok", unit_scale=True, desc="harvest",
                            dynamic_ncols=True)

    def consumed(self, byte_count: int) -> None:
        """Bytes of the dataset read so far (drives the total's estimate)."""
        self.fraction = min(1.0, byte_count / self.total_bytes)

    def _retotal(self) -> None:
        if self.bar is None or self.fraction <= 0:
            return
        estimate = int(self.tokens / self.fraction)
        total = estimate if self.cap is None else min(self.cap, estimate)
        self.bar.total = max(total, self.tokens)

    def skipped(self, tokens: int) -> None:
        """Tokens of shards kept from an earlier run (count for the ETA, not for the rate)."""
        self.tokens += tokens
        if self.bar is not None:
            self.bar.n += tokens
            self.bar.last_print_n = self.bar.n
            self._retotal()
            self.bar.refresh()

    def advance(self, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self._retotal()
            self.bar.update(tokens)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
