"""Mixing several datasets with sampling ratios (multi-dataset training, ViTPose++).

:class:`MixedDataset` maps a global sample index to ``(source, index in the source)``. Every cycle of
``length`` global indices gives source ``k`` a share ``ratio_k / sum(ratios)`` of the slots (largest
remainder rounding, so the shares add up exactly), in a seeded random order, so consecutive global
indices (a batch) mix the sources. Successive cycles walk on through each source: a finite source is
visited in a fresh seeded permutation per pass over it; an unbounded one (``None`` size: a synthetic
stream) gets new indices forever. The mapping is a pure function of the index, so it is the same in
every DataLoader worker and after resuming.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from ..errors import PoseforgeError

__all__ = ["MixedDataset", "split_by_ratio"]


def split_by_ratio(total: int, ratios: Sequence[float]) -> list[int]:
    """``total`` slots split in proportion to ``ratios`` (largest remainder; sums to ``total``)."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 1 or len(r) == 0 or not np.isfinite(r).all() or (r < 0).any() or r.sum() <= 0:
        raise PoseforgeError(f"sampling ratios: expected non-negative numbers with a positive sum, got {list(ratios)}")
    exact = total * r / r.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts.tolist()


class MixedDataset:
    """Global index -> ``(source, local index)`` for sources mixed by ratio.

    Args:
        sizes: each source's length, or ``None`` for an unbounded stream.
        ratios: sampling weight of each source (default: proportional to the sizes; needed with streams).
        length: global indices per cycle (default: the sum of the finite sizes).
        seed: seeds the slot order of every cycle and the visiting order of every source.
    """

    def __init__(self, sizes: Sequence[int | None], ratios: Sequence[float] | None = None, length: int | None = None,
                 seed: int = 0) -> None:
        if not sizes:
            raise PoseforgeError("MixedDataset: no sources")
        bad = [s for s in sizes if s is not None and int(s) < 1]
        if bad:
            raise PoseforgeError(f"MixedDataset: every source needs at least one sample, got sizes {list(sizes)}")
        if ratios is None:
            if any(s is None for s in sizes):
                raise PoseforgeError("MixedDataset: unbounded sources need explicit sampling ratios")
            ratios = [float(s) for s in sizes]
        if len(ratios) != len(sizes):
            raise PoseforgeError(f"MixedDataset: {len(sizes)} sources but {len(ratios)} ratios")
        if length is None:
            finite = [int(s) for s in sizes if s is not None]
            if not finite:
                raise PoseforgeError("MixedDataset: give length when every source is unbounded")
            length = sum(finite)
        if length < 1:
            raise PoseforgeError(f"MixedDataset: length must be positive, got {length}")
        self.sizes = [None if s is None else int(s) for s in sizes]
        self.ratios = [float(r) for r in ratios]
        self.length = int(length)
        self.seed = int(seed)
        self.counts = split_by_ratio(self.length, self.ratios)
        self._starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._cycle_order = lru_cache(maxsize=4)(self._make_cycle_order)
        self._pass_order = lru_cache(maxsize=64)(self._make_pass_order)

    def __len__(self) -> int:
        return self.length

    def _make_cycle_order(self, cycle: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0x5EED, cycle]).permutation(self.length)

    def _make_pass_order(self, source: int, rank: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 0xD47A, source, rank]).permutation(self.sizes[source])

    def locate(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(source [N], local index [N])`` of global indices (any non-negative integers)."""
        g = np.asarray(indices, dtype=np.int64).reshape(-1)
        if (g < 0).any():
            raise PoseforgeError(f"MixedDataset: negative index {int(g.min())}")
        cycle, slot = np.divmod(g, self.length)
        shuffled = np.empty_like(slot)
        for c in np.unique(cycle):  # one permutation per cycle (a batch spans one or two)
            rows = cycle == c
            shuffled[rows] = self._cycle_order(int(c))[slot[rows]]
        source = np.searchsorted(self._starts, shuffled, side="right") - 1
        counts = np.asarray(self.counts, dtype=np.int64)
        position = cycle * counts[source] + (shuffled - self._starts[source])
        local = position.copy()
        for k in np.unique(source):
            size = self.sizes[int(k)]
            if size is None:
                continue
            rows = source == k
            passes, within = np.divmod(position[rows], size)
            out = np.empty_like(within)
            for p in np.unique(passes):
                sel = passes == p
                out[sel] = self._pass_order(int(k), int(p))[within[sel]]
            local[rows] = out
        return source, local
