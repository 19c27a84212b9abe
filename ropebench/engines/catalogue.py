"""First-hit counts against a catalogue of distractors, decomposed over gallery shards. No I/O here.

Distractors join every task's gallery of their domain and are relevant to no query, so with each
query's threshold ``T`` (the float64 score of its best relevant test item) known, ``a`` and ``t``
are sums over shards: the test set's counts plus, per shard, the distractors above / exactly at ``T``.

How that stays exact:

1. The exactness core (:mod:`ropebench.engines.core`) gives every collecting query its ``T`` and a
   judge; the cut-off below which a screened score is surely below ``T`` uses the catalogue's
   largest distractor norm of the gallery domain.
2. A shard (:func:`scan_rows`) multiplies the collecting queries with its distractors in tiles;
   every candidate at or above a query's cut-off is decided by the judge pair by pair — the few
   inside their band settled in float64 right there, on the worker — and the shard returns, per
   task, only the counts above and at ``T`` per query and catalogue segment (small, sparse).
3. Unless exact counts are asked for, a shard stops collecting for a query once the test set's
   ``a`` and its own count reach ``max K`` (the query misses at every K).
4. Where every screened score is exact (integer vectors whose sums stay below 2²⁴, as binary codes
   under ip), the band is the point ``T`` itself and ties are counted, never settled.

Nested prefixes (``--distractor-sizes``) cut the catalogue into segments; every count is kept per
segment, so one pass reports every size.

Who screens a shard is a :class:`ShardScreen`, carried by the context: numpy float32 tiles
(:data:`NUMPY_SCREEN`, the default), or the screen an engine brings for its own precision and
device (the torch engine's, :mod:`ropebench.engines.torch.shards`). The judges are built for the
screen's precision, so its band decides, and the core decides every candidate either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ropebench.engines.core import FP32, Decision, Judge, Precision, judge_task
from ropebench.engines.core.scores import screen_norms
from ropebench.engines.core.task import FirstHits, TaskData
from ropebench.protocol import DOMAINS

__all__ = ["ScanTask", "ScanContext", "TaskPart", "TaskScan", "ShardResult", "ShardScreen", "NumpyScreen",
           "NUMPY_SCREEN", "shard_screen", "build_context", "scan_rows", "scan_numpy", "integer_bound", "TILE_QUERIES",
           "TILE_ITEMS", "segment_tiles", "TaskCounts"]

TILE_QUERIES = 1024  # query rows per tile
TILE_ITEMS = 1024  # distractor columns per tile: 4 MiB of scores, read again from cache by the selection


@dataclass(frozen=True)
class ScanTask:
    """One task's collecting queries as a shard sees them.

    Attributes:
        task: e.g. ``"P2V"``.
        query_set, gallery_set: the item sets (domains) of its queries and gallery.
        rows: ``(m,)`` int64 rows of the query set's vectors.
        judge: the core's judge for these ``m`` queries (thresholds, band, settlement vectors).
        lo: ``(m,)`` float32 cut-off per query for the catalogue's largest distractor norm.
        base: ``(m,)`` int64 the test set's ``a`` (a shard stops collecting at ``base + own >= max K``).
    """

    task: str
    query_set: str
    gallery_set: str
    rows: np.ndarray
    judge: Judge
    lo: np.ndarray
    base: np.ndarray

@dataclass(frozen=True)
class TaskScan:
    """What one screen found for one task in one shard's domain: the part, the GEMM's
    multiply-adds, the pairs settled in float64 and the name of the screen that ran (a screen may
    hand a shard it cannot cover to another, e.g. bf16 to fp32)."""

    part: TaskPart
    multiply_adds: int
    settled: int
    screened_by: str


class ShardScreen(Protocol):
    """How a shard's distractors are screened against one task's collecting queries.

    ``precision`` is the band the judges are built with (:func:`build_context`); ``scan`` must hand
    every score at or above a query's cut-off (``task.lo``, or a superset) to ``task.judge``, and
    count decisions per catalogue segment as :func:`scan_numpy` does. A screen travels to where
    shards run (a Dask worker), so it must pickle; it imports what it needs there.
    """

    @property
    def name(self) -> str: ...

    @property
    def precision(self) -> Precision: ...

    def describe(self) -> dict[str, Any]: ...

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """Held by this process while its runner scans shards (thread settings a screen wants for
        the whole pass; a Dask worker process has none and the screen sets them per shard)."""
        ...

    def scan(self, task: ScanTask, queries: np.ndarray, items: np.ndarray, exact_items: np.ndarray,
             item_norms: np.ndarray, segments: np.ndarray, n_segments: int, context: ScanContext) -> TaskScan: ...


@dataclass(frozen=True)
class NumpyScreen:
    """numpy float32 tiles with single-threaded BLAS: the default engine's screen (:func:`scan_numpy`)."""

    name: str = "numpy-fp32"
    precision: Precision = FP32

    def describe(self) -> dict[str, Any]:
        return {"screen": self.name}

    def session(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # the runner limits BLAS to one thread per shard itself

    def scan(self, task: ScanTask, queries: np.ndarray, items: np.ndarray, exact_items: np.ndarray,
             item_norms: np.ndarray, segments: np.ndarray, n_segments: int, context: ScanContext) -> TaskScan:
        part, work, settled = scan_numpy(task, queries, items, exact_items, item_norms, segments, n_segments,
                                         context)
        return TaskScan(part, work, settled, self.name)


NUMPY_SCREEN = NumpyScreen()


def shard_screen(engine: Any, run: Any) -> ShardScreen:
    """The screen an engine's catalogue shards are scanned with: the engine's own
    (``engine.shard_screen(run)``, given the test set's run so that it screens as the test set was
    screened) when it has one, else :data:`NUMPY_SCREEN`."""
    own = getattr(engine, "shard_screen", None)
    return NUMPY_SCREEN if own is None else own(run)


@dataclass(frozen=True)
class ScanContext:
    """Everything a shard needs besides its own rows; sent (broadcast) once per evaluation.

    ``queries[X]``: the prepared query-side vectors of domain X. ``boundaries``: ascending
    catalogue sizes ending the segments (a distractor at position ``i`` is in segment
    ``searchsorted(boundaries, i, "right")``; positions ``>= boundaries[-1]`` are not read).
    """

    metric: str
    center: np.ndarray | None
    queries: Mapping[str, np.ndarray]
    tasks: tuple[ScanTask, ...]
    boundaries: np.ndarray
    max_k: int
    exact_censored: bool
    tile_queries: int = TILE_QUERIES
    tile_items: int = TILE_ITEMS
    compression: Any = None  # applied to every shard's raw vectors first, as to the test set's
    screen: ShardScreen = NUMPY_SCREEN


@dataclass(frozen=True)
class TaskPart:
    """What one shard found for one task (query indices are into :attr:`ScanTask.rows`): sparse
    counts of distractors above ``T`` and exactly at ``T`` per (segment, query)."""

    above_segment: np.ndarray  # int64
    above_query: np.ndarray  # int64
    above_count: np.ndarray  # int64
    equal_segment: np.ndarray  # int64
    equal_query: np.ndarray  # int64
    equal_count: np.ndarray  # int64


@dataclass(frozen=True)
class ShardResult:
    """One shard's answer: per task its :class:`TaskPart`, its items per (segment, domain), its GEMM
    work, the pairs it settled in float64 and its multiply-adds per screen that ran."""

    index: int
    parts: Mapping[str, TaskPart]
    n_items: np.ndarray  # (n_segments, 3) int64
    multiply_adds: int
    settled: int = 0
    screened: Mapping[str, int] = field(default_factory=dict)


def integer_bound(vectors: np.ndarray) -> float | None:
    """The largest ``|x|`` of a float32 matrix whose entries are all integers, else None."""
    if not len(vectors):
        return 0.0
    if not np.array_equal(vectors, np.round(vectors)):
        return None
    return float(np.abs(vectors).max())


def build_context(task_data: Mapping[str, TaskData], tasks: Sequence[str], hits: Mapping[str, FirstHits], *,
                  metric: str, center: np.ndarray | None, distractor_norms: Mapping[str, float],
                  boundaries: Sequence[int], max_k: int, exact_censored: bool,
                  distractor_integers: Mapping[str, float | None] | None = None,
                  only: Mapping[str, np.ndarray] | None = None, tile_queries: int = TILE_QUERIES,
                  tile_items: int = TILE_ITEMS, compression: Any = None, screen: ShardScreen = NUMPY_SCREEN
                  ) -> tuple[ScanContext, dict[str, np.ndarray]]:
    """The context shards need, and per task the queries (task-local indices) that collect.

    A query collects when it is scored and not censored by the test set (unless exact counts are
    asked for). ``only``: per task, restrict collection to these query indices (agreement samples).
    ``distractor_norms``: per gallery set the largest screening norm of a prepared distractor;
    ``distractor_integers``: per set the largest ``|x|`` if every prepared distractor is
    integer-valued, else None (then a task's screened scores may be exact, see the core).
    ``screen``: who scans the shards; the judges' band is that of its precision.
    """
    queries: dict[str, np.ndarray] = {}
    scan_tasks = []
    collecting: dict[str, np.ndarray] = {}
    for task in tasks:
        data, h = task_data[task], hits[task]
        scored = np.flatnonzero(h.scored)
        keep = np.ones(len(scored), dtype=bool) if exact_censored else ~h.censored
        rows = scored[keep]
        base = np.asarray(h.a)[keep]
        if only is not None:
            chosen = np.isin(rows, only.get(task, np.zeros(0, dtype=np.int64)))
            rows, base = rows[chosen], base[chosen]
        norm = float(distractor_norms.get(data.gallery_set, 0.0))
        judge = judge_task(data, screen.precision, other_gallery=(distractor_integers or {}).get(data.gallery_set),
                           other_norm=norm).subset(rows)
        queries[data.query_set] = data.queries
        scan_tasks.append(ScanTask(task, data.query_set, data.gallery_set, rows.astype(np.int64), judge,
                                   judge.cutoff(norm), base.astype(np.int64)))
        collecting[task] = rows
    context = ScanContext(metric, center, queries, tuple(scan_tasks), np.asarray(boundaries, dtype=np.int64), max_k,
                          exact_censored, tile_queries, tile_items, compression, screen)
    return context, collecting


def segment_tiles(segments: np.ndarray, n_items: int, width: int) -> list[tuple[int, int, int]]:
    """``(segment, c0, c1)`` item tiles of at most ``width`` items in catalogue order, cut at the
    segment boundaries (a tile never straddles two segments)."""
    cuts = np.flatnonzero(np.diff(segments)) + 1
    return [(int(segments[c0]), c0, min(int(run_stop), c0 + width))
            for run_start, run_stop in zip(np.r_[0, cuts], np.r_[cuts, n_items])
            for c0 in range(int(run_start), int(run_stop), width)]


class TaskCounts:
    """One task's above and tied counts per (segment, query row) as its scan goes, and the rule
    that stops a query collecting: its first hits (``base``) and the distractors above it so far
    reach ``max_k`` (never when the exact counts are censored)."""

    def __init__(self, n_segments: int, base: np.ndarray, context: ScanContext) -> None:
        n = len(base)
        self.above = np.zeros((n_segments, n), dtype=np.int64)
        self.equal = np.zeros((n_segments, n), dtype=np.int64)
        self.taken = np.zeros(n, dtype=np.int64)  # above counts so far, all segments
        self.base, self.max_k, self.censored = base, context.max_k, context.exact_censored

    def add(self, segment: int, r0: int, r1: int, local: np.ndarray, decision: Decision) -> None:
        """Count a tile's decided candidates: ``local``, each one's row within the tile's rows
        ``r0..r1`` (its counts touch those rows only)."""
        width = r1 - r0
        counted = np.bincount(local[decision.above], minlength=width)
        self.above[segment, r0:r1] += counted
        self.taken[r0:r1] += counted
        if decision.tie.any():
            self.equal[segment, r0:r1] += np.bincount(local[decision.tie], minlength=width)

    def stopped(self, rows: np.ndarray) -> np.ndarray:
        """Those of ``rows`` that stop collecting now."""
        if self.censored:
            return rows[:0]
        return rows[self.base[rows] + self.taken[rows] >= self.max_k]

    def part(self, order: np.ndarray | None = None) -> TaskPart:
        """The task part; ``order``: the task's query of each of the first rows, when the rows
        were counted in another order (any rows after them never counted)."""
        above, equal = self.above, self.equal
        if order is not None:
            m = len(order)
            above, equal = np.zeros((len(above), m), dtype=np.int64), np.zeros((len(equal), m), dtype=np.int64)
            above[:, order] = self.above[:, :m]
            equal[:, order] = self.equal[:, :m]
        seg, query = np.nonzero(above)
        same_seg, same_query = np.nonzero(equal)
        return TaskPart(seg.astype(np.int64), query.astype(np.int64), above[seg, query], same_seg.astype(np.int64),
                        same_query.astype(np.int64), equal[same_seg, same_query])


def scan_numpy(task: ScanTask, queries: np.ndarray, items: np.ndarray, exact_items: np.ndarray,
               item_norms: np.ndarray, segments: np.ndarray, n_segments: int, context: ScanContext
               ) -> tuple[TaskPart, int, int]:
    """Scan one task's collecting queries against one domain's distractors, tile by tile in
    catalogue order (so a query stops collecting only after its earlier segments were counted).

    Returns the task part, the multiply-adds done and the pairs settled.
    """
    m = len(task.rows)
    lo = task.lo.copy()  # +inf once a query stops collecting
    work = settled = 0
    if m == 0 or len(items) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return TaskPart(empty, empty, empty, empty, empty, empty), 0, 0
    vectors = np.take(queries, task.rows, axis=0)
    counts = TaskCounts(n_segments, task.base, context)
    tq, ti = context.tile_queries, context.tile_items
    buffer = np.empty(min(tq, m) * min(ti, len(items)), dtype=np.float32)
    tiles = segment_tiles(segments, len(items), ti)
    # A query block meets the shard's items (a few MiB, kept in cache) in catalogue order; queries
    # are streamed once per shard, not once per item tile.
    for r0 in range(0, m, tq):
        r1 = min(m, r0 + tq)
        for segment, c0, c1 in tiles:
            block = items[c0:c1]
            scores = buffer[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            np.matmul(vectors[r0:r1], block.T, out=scores)
            work += (r1 - r0) * (c1 - c0) * vectors.shape[1]
            # A row maximum first: one cheap pass, and most rows have no candidate at all.
            hot = np.flatnonzero(scores.max(axis=1) >= lo[r0:r1])
            if not len(hot):
                continue
            rows = r0 + hot
            r, c = np.nonzero(scores[hot] >= lo[rows][:, None])
            query = rows[r]
            decision = task.judge.decide(query, c0 + c, scores[hot[r], c], exact_items, item_norms[c0 + c])
            settled += decision.settled
            counts.add(segment, r0, r1, hot[r], decision)  # hot[r]: the tile's own row
            lo[counts.stopped(rows)] = np.inf
    return counts.part(), work, settled


def scan_rows(index: int, positions: np.ndarray, domains: np.ndarray, matrix: np.ndarray,
              context: ScanContext) -> ShardResult:
    """Scan one shard's rows (positions, domain codes, raw float32 embeddings) for every task.

    Rows at positions ``>= boundaries[-1]`` are ignored. The vectors are prepared here exactly as
    the test set's were (cosine normalised, l2 augmented with the same centre).
    """
    from ropebench.engines.exact import prepare_vectors, score_vectors

    if context.compression is not None:
        matrix = context.compression.apply(matrix)
    boundaries = context.boundaries
    n_segments = len(boundaries)
    inside = positions < boundaries[-1] if n_segments else np.zeros(len(positions), dtype=bool)
    segments_all = np.searchsorted(boundaries, positions, side="right")
    n_items = np.zeros((n_segments, len(DOMAINS)), dtype=np.int64)
    np.add.at(n_items, (segments_all[inside], domains[inside]), 1)
    parts: dict[str, TaskPart] = {}
    work = settled = 0
    screened: dict[str, int] = {}
    for code, domain in enumerate(DOMAINS):
        rows = np.flatnonzero(inside & (domains == code))
        readers = [task for task in context.tasks if task.gallery_set == domain]
        if not len(rows) or not readers:
            continue
        items = prepare_vectors(matrix[rows], context.metric, center=context.center)[1]
        exact = score_vectors(matrix[rows], context.metric, items)
        norms = screen_norms(items, context.metric, "gallery")
        for task in readers:
            found = context.screen.scan(task, context.queries[task.query_set], items,
                                        items if exact is None else exact, norms, segments_all[rows], n_segments,
                                        context)
            parts[task.task] = found.part
            work += found.multiply_adds
            settled += found.settled
            screened[found.screened_by] = screened.get(found.screened_by, 0) + found.multiply_adds
    return ShardResult(index, parts, n_items, work, settled, screened)
