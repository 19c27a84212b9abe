"""Merging shard answers and settling band entries exactly: first-hit counts at every catalogue size.
No I/O here; see :mod:`ropebench.engines.catalogue` for the decomposition this completes.

Per task and catalogue size (a prefix ending at a segment boundary):

- a query with no band entry inside the prefix keeps the test engine's ``a, t, p`` and adds the
  shards' counts above its band (those distractors are above ``s+`` in every computation);
- a query with band entries inside the prefix is *settled*: one matrix product scores it against
  its whole test gallery and every one of its band distractors at once (bit-identical rows scored
  once, so copies tie exactly), and all its counts come from that one row;
- unless exact counts are asked for, a query with ``a >= max K`` is censored (``max K, 0, 1``).

Shard answers are sums and lists, so the order in which shards arrive changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ropebench.engines.base import FirstHits, TaskData
from ropebench.engines.catalogue import ScanContext, ShardResult
from ropebench.engines.exact import EXACT_BATCH, _distinct_rows, eligible_mask
from ropebench.errors import RopebenchError
from ropebench.protocol import DOMAINS

__all__ = ["Accumulator", "Settled", "settle_queries", "BAND_ENTRIES_CAP"]

BAND_ENTRIES_CAP = 1 << 25  # band entries held for settlement (about 0.7 GiB with their vectors at d=128)


@dataclass(frozen=True)
class Settled:
    """Exact counts of settled queries against their test gallery, and their band scores.

    ``a, t, p, best``: per settled query (task-local indices ``queries``); ``values``: per band
    entry, its score from the same computation.
    """

    queries: np.ndarray
    a: np.ndarray
    t: np.ndarray
    p: np.ndarray
    best: np.ndarray
    values: np.ndarray


def settle_queries(data: TaskData, queries: np.ndarray, owner: np.ndarray, positions: np.ndarray,
                   band_positions: np.ndarray, band_vectors: np.ndarray, lo: np.ndarray, *,
                   batch: int = EXACT_BATCH) -> Settled:
    """Score each query against its test gallery plus its band distractors in one computation.

    Args:
        data: the task (test gallery, labels, exclusions).
        queries: ``(m,)`` task-local query indices, unique.
        owner: ``(e,)`` index into ``queries`` of each band entry.
        positions: ``(e,)`` catalogue position of each band entry's distractor.
        band_positions, band_vectors: every band distractor (ascending positions) and its prepared vector.
        lo: ``(m,)`` the bottom of each query's band: ``s+`` lies above it in any computation, so only
            test scores ``>= lo`` can count, and only those are examined after one pass.
    """
    n_gallery = len(data.gallery)
    out = [np.zeros(len(queries), dtype=np.int64) for _ in range(3)]
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    values = np.zeros(len(owner), dtype=np.float32)
    if not len(queries):
        return Settled(queries, out[0], out[1], out[2], best, values)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(0, len(queries) + batch, batch))
    # The test gallery's distinct rows once; each batch appends its band distractors that are not
    # among them (a copy of a test item takes that item's column), and one product scores them all.
    distinct, inverse = _distinct_rows(data.gallery)
    test_columns = np.arange(n_gallery) if inverse is None else inverse
    known = {row.tobytes(): column for column, row in enumerate(distinct)}
    for number, start in enumerate(range(0, len(queries), batch)):
        stop = min(len(queries), start + batch)
        rows = queries[start:stop]
        entries = order[bounds[number]:bounds[number + 1]]
        union, position_column = np.unique(positions[entries], return_inverse=True)
        extra = band_vectors[np.searchsorted(band_positions, union)]
        seen = dict(known)
        added: list[np.ndarray] = []
        band_columns = np.empty(len(union), dtype=np.int64)
        for index, row in enumerate(extra):
            key = row.tobytes()
            if key not in seen:
                seen[key] = len(distinct) + len(added)
                added.append(row)
            band_columns[index] = seen[key]
        matrix = np.concatenate([distinct, np.stack(added)]) if added else distinct
        scores = data.queries[rows] @ matrix.T
        test = scores[:, test_columns]
        r, c = np.nonzero(test >= lo[start:stop, None])
        value = test[r, c]
        relevant = data.gallery_products[c] == data.query_products[rows[r]]
        eligible = eligible_mask(data, rows[r], c[:, None])[:, 0]  # pairs: each query with its own column
        top = np.full(len(rows), -np.inf, dtype=np.float32)
        np.maximum.at(top, r[relevant & eligible], value[relevant & eligible])
        irrelevant = eligible & ~relevant
        out[0][start:stop] = np.bincount(r[irrelevant & (value > top[r])], minlength=len(rows))
        out[1][start:stop] = np.bincount(r[irrelevant & (value == top[r])], minlength=len(rows))
        out[2][start:stop] = np.bincount(r[relevant & eligible & (value == top[r])], minlength=len(rows))
        best[start:stop] = top
        values[entries] = scores[owner[entries] - start, band_columns[position_column.reshape(-1)]]
    return Settled(queries, out[0], out[1], out[2], best, values)


class Accumulator:
    """Collects shard answers (in any order) and turns them into first-hit counts per size."""

    def __init__(self, context: ScanContext) -> None:
        self.context = context
        n_segments = len(context.boundaries)
        self.above = {task.task: np.zeros((n_segments, len(task.rows)), dtype=np.int64) for task in context.tasks}
        self.equal = {task.task: np.zeros((n_segments, len(task.rows)), dtype=np.int64) for task in context.tasks}
        self.listed = 0  # band entries held
        self.bands: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {t.task: [] for t in context.tasks}
        self.vectors: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_items = np.zeros((n_segments, len(DOMAINS)), dtype=np.int64)
        self.seen: set[int] = set()
        self.multiply_adds = 0

    def add(self, result: ShardResult) -> None:
        """Add one shard's answer; a shard answering twice (a retried task) is an error."""
        if result.index in self.seen:
            raise RopebenchError(f"shard {result.index} answered twice; the run is not trustworthy")
        self.seen.add(result.index)
        for task, part in result.parts.items():
            np.add.at(self.above[task], (part.above_segment, part.above_query), part.above_count)
            np.add.at(self.equal[task], (part.equal_segment, part.equal_query), part.equal_count)
            if len(part.band_query):
                self.bands[task].append((part.band_query, part.band_position, part.band_value))
                self.listed += len(part.band_query)
        if self.listed > BAND_ENTRIES_CAP:
            raise RopebenchError(f"{self.listed:,} distractor scores lie within float32 rounding of their query's best "
                                 "relevant score (massive near-ties); exact settlement would hold them all. Fix: "
                                 "integer-valued embeddings under ip or l2 are counted without listing; otherwise "
                                 "evaluate a smaller catalogue")
        if len(result.band_positions):
            self.vectors.append((result.band_positions, result.band_vectors))
        self.n_items += result.n_items
        self.multiply_adds += result.multiply_adds

    def items_per_size(self) -> np.ndarray:
        """``(n_sizes + 1, 3)`` distractor items per domain inside each prefix (row 0: none)."""
        return np.vstack([np.zeros((1, len(DOMAINS)), dtype=np.int64), np.cumsum(self.n_items, axis=0)])

    def hits(self, task_data: Mapping[str, TaskData], hits: Mapping[str, FirstHits]
             ) -> tuple[list[dict[str, FirstHits]], dict[str, int]]:
        """First-hit counts per size (index 0: the test set alone, index j: through segment j)
        and the counters ``queries_settled`` and ``band_entries``."""
        context = self.context
        if self.vectors:
            positions = np.concatenate([p for p, _ in self.vectors])
            vectors = np.concatenate([v for _, v in self.vectors])
            order = np.argsort(positions, kind="stable")
            positions, vectors = positions[order], vectors[order]
        else:
            positions = np.zeros(0, dtype=np.int64)
            vectors = np.zeros((0, 1), dtype=np.float32)
        by_size: list[dict[str, FirstHits]] = [dict(hits)]
        by_size += [{} for _ in context.boundaries]
        counters = {"queries_settled": 0, "band_entries": 0}
        for scan in context.tasks:
            task, base = scan.task, hits[scan.task]
            slot = np.full(len(base.scored), -1, dtype=np.int64)
            slot[np.flatnonzero(base.scored)] = np.arange(int(base.scored.sum()))
            where = slot[scan.rows]  # each collecting query's place among the scored ones
            parts = self.bands[task]
            query = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            place = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            settled_queries = np.unique(query)
            owner = np.searchsorted(settled_queries, query).astype(np.int64)
            settled = settle_queries(task_data[task], scan.rows[settled_queries], owner, place, positions, vectors,
                                     scan.lo[settled_queries])
            counters["queries_settled"] += len(settled_queries)
            counters["band_entries"] += len(query)
            above = np.cumsum(self.above[task], axis=0)
            ties = np.cumsum(self.equal[task], axis=0)
            for j, boundary in enumerate(context.boundaries, start=1):
                a, t, p = base.a.copy(), base.t.copy(), base.p.copy()
                censored = base.censored.copy()
                a[where] += above[j - 1]
                t[where] += ties[j - 1]  # ties of exact queries (never settled: equal is 0 for the others)
                if not context.exact_censored:
                    # Censored on the test engine's counts, as the shards decided when they stopped
                    # collecting (a settled row could count one near-tie fewer; its band is incomplete).
                    done = (a >= context.max_k) & ~censored
                    a[done], t[done], p[done], censored[done] = context.max_k, 0, 1, True
                inside = (place < boundary) & ~censored[where[settled_queries[owner]]]
                now = np.unique(owner[inside])  # settled queries with a band entry in this prefix
                if len(now):
                    s = settled.best[owner]
                    higher = np.bincount(owner[inside & (settled.values > s)], minlength=len(settled_queries))
                    equal = np.bincount(owner[inside & (settled.values == s)], minlength=len(settled_queries))
                    rows = where[settled_queries[now]]
                    a[rows] = settled.a[now] + above[j - 1][settled_queries[now]] + higher[now]
                    t[rows] = settled.t[now] + equal[now]
                    p[rows] = settled.p[now]
                if not context.exact_censored:
                    done = (a >= context.max_k) & ~censored
                    a[done], t[done], p[done], censored[done] = context.max_k, 0, 1, True
                by_size[j][task] = FirstHits(scored=base.scored, a=a, t=t, p=p, censored=censored,
                                             n_rescored=base.n_rescored + len(now))
        return by_size, counters
