"""The one engine contract: ``search(SearchRequest) -> SearchRun``, with the counters every engine
reports. No search and no I/O here.

An engine turns prepared vectors and labels into, per task, the first-hit counts ``a, t, p`` of
each query: ``a`` irrelevant gallery items strictly above the query's best relevant score ``s+``,
``t`` irrelevant items exactly at ``s+``, ``p`` relevant items at ``s+``. Measures are computed
from these counts alone (:mod:`ropebench.measures`), so engines that agree on the counts agree on
every number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from ropebench.engines.core.levels import ALL_RELEVANT, FIRST_HIT, RelevantLevels
from ropebench.engines.core.precision import FP32, Precision
from ropebench.engines.core.task import FirstHits, TaskData

__all__ = ["TaskData", "FirstHits", "RelevantLevels", "SearchRequest", "SearchRun", "Engine", "COUNTERS",
           "FIRST_HIT", "ALL_RELEVANT"]

# Every engine reports these counters (0 where a path does not exist in that engine), so a test
# can bound them and a results file records how the numbers were computed.
COUNTERS: tuple[str, ...] = (
    "queries_rescored",  # queries whose counts came from screening their whole gallery row again
    "queries_censored",  # queries with max K items above their first hit: misses at every K
    "blocks_tiled",  # similarity blocks computed in tiles by the engine's main path
    "blocks_small",  # blocks small enough to be counted row by row
    "faiss_searches",  # FAISS index searches run
    "pairs_settled",  # candidate pairs whose comparison with the threshold was settled in float64
    "relevant_settled",  # relevant pairs settled in float64 to find the thresholds (>= 1 per scored query)
)


@dataclass(frozen=True)
class SearchRequest:
    """Everything a search is asked: the one argument of :meth:`Engine.search`.

    Attributes:
        task_data: per task, its :class:`TaskData` (vectors prepared for an inner product:
            cosine normalised, l2 augmented; built by the task registry, :mod:`ropebench.tasks`).
        tasks: the tasks to search, in order.
        max_k: the largest K reported.
        exact_censored: exact counts even for queries that miss at every K (per-query output).
        threads: worker threads (and BLAS / OpenMP threads).
        symmetric_scores: ``q·g`` may serve both directions of a cross block (False for l2,
            whose query and gallery sides differ).
        precision: the screening precision an engine may use (the core's band follows it).
        on_start: called once with a total and its unit; ``on_progress`` with units done.
        counts: which counts the requested measures need: ``first_hit`` (always: ``a, t, p``) and
            ``all_relevant`` (MAP@R, RP, mAP@K: per relevant level, see
            :class:`~ropebench.engines.core.levels.RelevantLevels`), returned in ``SearchRun.levels``.
            Engines compute the second only when asked, so the default measures cost nothing more.
        depth_k: with ``all_relevant``, the largest K of ``mAP@K`` (0: none); ranks are counted
            down to ``max(R, depth_k)``.
    """

    task_data: Mapping[str, TaskData]
    tasks: tuple[str, ...]
    max_k: int
    exact_censored: bool = False
    threads: int = 1
    symmetric_scores: bool = True
    precision: Precision = FP32
    on_start: Callable[[int, str], None] | None = None
    on_progress: Callable[[int], None] | None = None
    counts: frozenset[str] = frozenset({FIRST_HIT})
    depth_k: int = 0

    @property
    def all_relevant(self) -> bool:
        return ALL_RELEVANT in self.counts

    def with_(self, **changes: Any) -> SearchRequest:
        return replace(self, **changes)


@dataclass(frozen=True)
class SearchRun:
    """Everything a search returns; nothing is patched onto a result afterwards.

    Attributes:
        hits: per task, the first-hit counts (at the largest catalogue size, if any).
        counters: the engine's counters (every name in :data:`COUNTERS`, and a composition's own).
        engine: what ran, for ``environment.engine`` (``name`` and whatever the engine records:
            the runner, the test-set engine of a composition, the screening precision).
        by_size: with a distractor catalogue, the counts per catalogue size (index 0: the test set
            alone); ``sizes`` the sizes and ``items_per_size`` the distractors per domain in each.
        protocol: additions to the result's protocol (``search: approximate`` and its index).
        agreement: an approximate search's measured agreement with exact search, per task.
        timing: phases in seconds (``timing`` of the result).
        levels: per task, the all-relevant counts when the request asked for them (an engine that
            does not compute them leaves this empty; :func:`ropebench.engines.core.levels.fill_levels`
            then computes them by the simple whole-row path, so every engine serves every measure).
    """

    hits: Mapping[str, FirstHits]
    counters: Mapping[str, int] = field(default_factory=dict)
    engine: Mapping[str, Any] = field(default_factory=dict)
    by_size: Sequence[Mapping[str, FirstHits]] = ()
    items_per_size: np.ndarray | None = None
    protocol: Mapping[str, Any] = field(default_factory=dict)
    agreement: Mapping[str, Any] | None = None
    timing: Mapping[str, float] = field(default_factory=dict)
    levels: Mapping[str, RelevantLevels] = field(default_factory=dict)


class Engine(Protocol):
    """The interface every engine and composition implements; registered by name in
    :mod:`ropebench.engines`."""

    name: str

    def search(self, request: SearchRequest) -> SearchRun:
        """First-hit counts of ``request.tasks`` (see :class:`SearchRequest`)."""
        ...
