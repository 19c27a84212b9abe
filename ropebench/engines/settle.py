"""Merging shard answers into first-hit counts at every catalogue size. No I/O here; see
:mod:`ropebench.engines.catalogue` for the decomposition this completes.

Every comparison was decided where it was screened (the test set by its engine, each distractor
on its shard, by the exactness core against the same float64 threshold ``T``), so per task and
catalogue size (a prefix ending at a segment boundary) the counts are sums: the test set's ``a``
and ``t`` plus the shards' counts above and at ``T`` through that segment; ``p`` is the test set's.
Shard answers are sums, so the order in which shards arrive changes nothing. Censoring is left to
the core's one rule, applied by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ropebench.engines.catalogue import ScanContext, ShardResult
from ropebench.engines.core.task import FirstHits
from ropebench.errors import RopebenchError
from ropebench.protocol import DOMAINS

__all__ = ["Accumulator"]


class Accumulator:
    """Collects shard answers (in any order) and turns them into first-hit counts per size."""

    def __init__(self, context: ScanContext) -> None:
        self.context = context
        n_segments = len(context.boundaries)
        self.above = {task.task: np.zeros((n_segments, len(task.rows)), dtype=np.int64) for task in context.tasks}
        self.equal = {task.task: np.zeros((n_segments, len(task.rows)), dtype=np.int64) for task in context.tasks}
        self.n_items = np.zeros((n_segments, len(DOMAINS)), dtype=np.int64)
        self.seen: set[int] = set()
        self.multiply_adds = 0
        self.settled = 0
        self.screened: dict[str, int] = {}  # multiply-adds per screen that ran

    def add(self, result: ShardResult) -> None:
        """Add one shard's answer; a shard answering twice (a retried task) is an error."""
        if result.index in self.seen:
            raise RopebenchError(f"shard {result.index} answered twice; the run is not trustworthy")
        self.seen.add(result.index)
        for task, part in result.parts.items():
            np.add.at(self.above[task], (part.above_segment, part.above_query), part.above_count)
            np.add.at(self.equal[task], (part.equal_segment, part.equal_query), part.equal_count)
        self.n_items += result.n_items
        self.multiply_adds += result.multiply_adds
        self.settled += result.settled
        for name, work in result.screened.items():
            self.screened[name] = self.screened.get(name, 0) + work

    def items_per_size(self) -> np.ndarray:
        """``(n_sizes + 1, 3)`` distractor items per domain inside each prefix (row 0: none)."""
        return np.vstack([np.zeros((1, len(DOMAINS)), dtype=np.int64), np.cumsum(self.n_items, axis=0)])

    def hits(self, hits: Mapping[str, FirstHits]) -> list[dict[str, FirstHits]]:
        """First-hit counts per size (index 0: the test set alone, index j: through segment j).
        A query the test set censored keeps its counts (it did not collect)."""
        context = self.context
        by_size: list[dict[str, FirstHits]] = [dict(hits)]
        by_size += [{} for _ in context.boundaries]
        for scan in context.tasks:
            task, base = scan.task, hits[scan.task]
            slot = np.full(len(base.scored), -1, dtype=np.int64)
            slot[np.flatnonzero(base.scored)] = np.arange(int(base.scored.sum()))
            where = slot[scan.rows]  # each collecting query's place among the scored ones
            above = np.cumsum(self.above[task], axis=0)
            ties = np.cumsum(self.equal[task], axis=0)
            for j in range(1, len(context.boundaries) + 1):
                a, t = base.a.copy(), base.t.copy()
                a[where] += above[j - 1]
                t[where] += ties[j - 1]
                by_size[j][task] = FirstHits(scored=base.scored, a=a, t=t, p=base.p, censored=base.censored,
                                             n_rescored=base.n_rescored)
        return by_size
