"""Compositions: an engine for the test set extended by a distractor catalogue, shard by shard,
on a runner (this process's threads or a Dask cluster). A composition is an engine: it takes the
same :class:`~ropebench.engines.base.SearchRequest` and returns one
:class:`~ropebench.engines.base.SearchRun` that carries everything the catalogue adds (counts per
catalogue size, distractors per size, the runner's description, its phases). No I/O here: shards
are read by the ``scan`` function where they run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ropebench.engines.base import Engine, FirstHits, SearchRequest, SearchRun
from ropebench.engines.catalogue import (
    NUMPY_SCREEN,
    ScanContext,
    ShardResult,
    ShardScreen,
    build_context,
    shard_screen,
)
from ropebench.engines.runners import Eta, Runner
from ropebench.engines.settle import Accumulator
from ropebench.protocol import DOMAINS

__all__ = ["CatalogueEngine", "CATALOGUE_COUNTERS"]

CATALOGUE_COUNTERS = ("distractor_shards", "distractor_pairs_settled", "distractor_multiply_adds")


class CatalogueEngine:
    """The test set by ``base``, then every catalogue shard by ``runner``.

    Args:
        base: the test set's engine.
        shards: the catalogue's shards (objects with ``index``, ``start``, ``n_rows``), in order.
        scan: ``scan(shard, context) -> ShardResult``, run where the shard is (reads and scans it).
        runner: where shards run.
        boundaries: catalogue sizes reported (ascending; 0 is the test set alone).
        max_norm, integers: per gallery set, the largest screening norm of the prepared distractors,
            and their largest ``|x|`` if all are integers (else None).
        metric, center: how the distractors are prepared (as the test set was).
        compression: ``--compress``: applied to every shard's vectors first, as to the test set's.
    """

    def __init__(self, base: Engine, shards: Sequence[Any], scan: Callable[[Any, ScanContext], ShardResult],
                 runner: Runner, *, boundaries: Sequence[int], max_norm: Mapping[str, float],
                 integers: Mapping[str, float | None], metric: str, center: np.ndarray | None,
                 progress: bool = False, compression: Any = None) -> None:
        self.base, self.scan, self.runner = base, scan, runner
        self.boundaries = sorted({int(b) for b in boundaries if b > 0})
        limit = self.boundaries[-1] if self.boundaries else 0
        self.shards = [shard for shard in shards if shard.start < limit]
        self.max_norm, self.integers = dict(max_norm), dict(integers)
        self.metric, self.center, self.progress, self.compression = metric, center, progress, compression
        self.name = "dask" if runner.name == "dask" else base.name

    def search(self, request: SearchRequest) -> SearchRun:
        started = time.perf_counter()
        run = self.base.search(request)
        searched = time.perf_counter()
        screen = shard_screen(self.base, run)  # the shards are screened as the test set was
        by_size, items, counters, phases, screened = self.extend(request, run.hits, screen=screen)
        timing = {"test_search_s": round(searched - started, 4),
                  "distractors_s": round(time.perf_counter() - searched, 4), **phases}
        engine = {**run.engine, "name": self.name, **self.runner.describe(), "test_engine": self.base.name,
                  "shards": {**screen.describe(), "multiply_adds": screened}}
        return SearchRun(hits=by_size[-1], counters={**run.counters, **counters}, engine=engine, by_size=by_size,
                         items_per_size=items, timing=timing)

    def extend(self, request: SearchRequest, hits: Mapping[str, FirstHits],
               only: Mapping[str, np.ndarray] | None = None, screen: ShardScreen = NUMPY_SCREEN
               ) -> tuple[list[dict[str, FirstHits]], np.ndarray, dict[str, int], dict[str, float], dict[str, int]]:
        """The test set's counts extended by the catalogue, per size (index 0: none), the
        distractors per size and domain, the counters, the phases and the multiply-adds per screen
        that ran.

        ``only``: per task, the queries to extend (the others keep the test set's counts).
        ``screen``: who scans the shards (numpy float32 unless the engine brings its own).
        """
        counters = dict.fromkeys(CATALOGUE_COUNTERS, 0)
        if not self.boundaries:
            return [dict(hits)], np.zeros((1, len(DOMAINS)), dtype=np.int64), counters, {}, {}
        started = time.perf_counter()
        context, _ = build_context(request.task_data, request.tasks, hits, metric=self.metric, center=self.center,
                                   distractor_norms=self.max_norm, distractor_integers=self.integers,
                                   boundaries=self.boundaries, max_k=request.max_k,
                                   exact_censored=request.exact_censored, only=only, compression=self.compression,
                                   screen=screen)
        accumulator = Accumulator(context)
        prepared = time.perf_counter()
        limit = self.boundaries[-1]
        sizes = {shard.index: min(shard.n_rows, limit - shard.start) for shard in self.shards}
        eta = Eta("distractors", sum(sizes.values()), enabled=self.progress)
        with screen.session():
            for result in self.runner.map(self.scan, self.shards, context):
                accumulator.add(result)
                eta.advance(sizes[result.index])
        eta.finish()
        scanned = time.perf_counter()
        by_size = accumulator.hits(hits)
        phases = {"thresholds_s": round(prepared - started, 4), "shards_s": round(scanned - prepared, 4),
                  "merge_s": round(time.perf_counter() - scanned, 4)}
        counters.update(distractor_shards=len(self.shards), distractor_pairs_settled=accumulator.settled,
                        distractor_multiply_adds=accumulator.multiply_adds)
        return by_size, accumulator.items_per_size(), counters, phases, dict(accumulator.screened)
