"""``--index FACTORY``: approximate search with a FAISS index, and its measured agreement with exact search.

Per gallery domain one index (``faiss.index_factory(d, FACTORY, METRIC_INNER_PRODUCT)``, e.g.
``IVF4096,Flat``, ``HNSW32``, ``IVF4096,PQ32``) holds the test items and the catalogue's items of
that domain. It is trained on a seeded sample of them, then searched with ``--nprobe`` /
``--ef-search`` for each query's top ``max K + (most items a query excludes)``. From that list,
counted by score as the exact engines do, come ``a, t, p``; a query whose list holds no relevant
item is a miss at every K (its rank is beyond the list).

Agreement: per task, ``agreement_queries`` scored queries drawn with a seeded generator are also
searched exactly (the test set's rows decided by the exactness core, :mod:`ropebench.engines.core`,
the catalogue by the exact composition); the result reports the fraction whose first-hit rank is unchanged and
``|ΔR@K|`` (percentage points) on them. Results are marked ``protocol.search = "approximate"``,
which leaderboards refuse. No I/O here: the catalogue's rows come from a callable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ropebench.engines.base import COUNTERS, FirstHits, SearchRequest, SearchRun, TaskData
from ropebench.engines.core import FP32, judge_task, row_counts
from ropebench.engines.exact import counts_from_scores, eligible_mask
from ropebench.engines.faiss import _faiss, faiss_threads
from ropebench.errors import UsageError
from ropebench.protocol import ALL_TASKS, DOMAINS

__all__ = ["ApproximateEngine", "agreement", "agreement_sample", "TRAIN_SIZE", "QUERY_BATCH"]

TRAIN_SIZE = 100_000  # training vectors per index (at least 64 per IVF list)
QUERY_BATCH = 4096

Rows = Callable[[], Iterable[Any]]  # yields objects with .positions, .domains, .matrix (raw float32)


def agreement_sample(task: str, scored: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The queries whose agreement is measured: ``n`` of a task's scored queries (task-local
    indices, in submission order) drawn without replacement by
    ``numpy.random.default_rng([seed, position of the task in ALL_TASKS])``, sorted."""
    rng = np.random.default_rng([seed, ALL_TASKS.index(task)])
    return np.sort(rng.choice(scored, size=min(n, len(scored)), replace=False))


Columns = Callable[[np.ndarray, np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


def agreement(approx: FirstHits, exact: FirstHits, sample: np.ndarray, max_k: int,
              columns: Columns | None = None) -> dict[str, Any]:
    """How the approximate counts of ``sample`` (task-local query indices) compare with the exact ones.

    Returns ``{"queries": n, "unchanged": fraction, "delta": {"R@K": |Δ|, "MRR@K": |Δ|}}``; a rank
    is unchanged when ``a, t, p`` are equal, or both miss at every K (``a >= max K``). ``columns``:
    per-query measures from ``a, t, p`` (given by the caller, which knows the measures; engines do
    not import them); without it ``delta`` is empty.
    """

    def picked(hits: FirstHits) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        slot = np.cumsum(hits.scored) - 1
        rows = slot[sample]
        return hits.a[rows], hits.t[rows], hits.p[rows], hits.censored[rows]

    a1, t1, p1, c1 = picked(approx)
    a2, t2, p2, c2 = picked(exact)
    missed = (a1 >= max_k) & (a2 >= max_k)
    same = missed | (~c1 & ~c2 & (a1 == a2) & (t1 == t2) & (p1 == p2))
    delta: dict[str, float] = {}
    if len(sample) and columns is not None:
        mine, theirs = columns(a1, t1, p1), columns(a2, t2, p2)
        delta = {name: abs(float(np.mean(mine[name])) - float(np.mean(theirs[name]))) for name in mine}
    return {"queries": int(len(sample)), "unchanged": float(same.mean()) if len(sample) else None, "delta": delta}


class ApproximateEngine:
    """Approximate search with one FAISS index per gallery domain (see the module docstring).

    Args:
        factory: the ``faiss.index_factory`` string.
        nprobe, ef_search: search parameters (IVF lists probed; HNSW candidate list size).
        agreement_queries: queries per task checked against exact search (0: none).
        seed: seeds the training sample and the agreement queries.
        rows: the catalogue's shards as rows (None: the test set alone); ``limit`` positions kept.
        exact: the exact catalogue engine (its ``extend`` gives the agreement queries' exact counts).
    """

    name = "approximate"

    def __init__(self, factory: str, *, nprobe: int | None = None, ef_search: int | None = None,
                 agreement_queries: int = 2000, seed: int = 0, rows: Rows | None = None, limit: int = 0,
                 exact: Any = None, train_size: int = TRAIN_SIZE, progress: bool = False,
                 metric: str | None = None, center: np.ndarray | None = None, ks: Sequence[int] = (1, 5, 10, 20, 50),
                 ties: str = "expected", catalogue_items: Mapping[str, int] | None = None,
                 columns: Columns | None = None, compression: Any = None) -> None:
        if agreement_queries < 0:
            raise UsageError(f"--agreement-queries must be at least 0, got {agreement_queries}")
        self.factory, self.nprobe, self.ef_search = factory, nprobe, ef_search
        self.agreement_queries, self.seed, self.rows, self.limit = agreement_queries, seed, rows, limit
        self.exact, self.train_size, self.progress = exact, train_size, progress
        self.metric = metric if metric is not None else getattr(exact, "metric", "cosine")
        self.center = center if center is not None else getattr(exact, "center", None)
        self.ks, self.ties, self.columns, self.compression = tuple(ks), ties, columns, compression
        self.catalogue_items = dict(catalogue_items or getattr(getattr(exact, "info", None), "n_items", {}) or {})
        self.agreement: dict[str, Any] = {}
        self.reference: dict[str, FirstHits] = {}
        self.timing: dict[str, float] = {}
        self.items_per_size = np.zeros((2, len(DOMAINS)), dtype=np.int64)

    def protocol_record(self) -> dict[str, Any]:
        return {"search": "approximate", "index": {"factory": self.factory, "nprobe": self.nprobe,
                                                   "ef_search": self.ef_search, "train_size": self.train_size,
                                                   "seed": self.seed, "agreement_queries": self.agreement_queries}}

    def _new_index(self, dim: int) -> Any:
        faiss = _faiss()
        try:
            index = faiss.index_factory(dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise UsageError(f"--index {self.factory!r}: FAISS cannot build it ({reason}). Fix: use "
                             "an index_factory string such as IVF4096,Flat, HNSW32 or IVF4096,PQ32") from None
        space = faiss.ParameterSpace()
        for option, name, value in (("--nprobe", "nprobe", self.nprobe), ("--ef-search", "efSearch", self.ef_search)):
            if value is not None:
                try:
                    space.set_index_parameter(index, name, value)
                except RuntimeError:
                    raise UsageError(f"{option} does not apply to index {self.factory!r}. Fix: drop it") from None
        return index

    def _shards(self) -> Iterable[tuple[int, np.ndarray]]:
        """Prepared catalogue vectors per domain code, shard by shard, below ``limit``."""
        from ropebench.engines.exact import prepare_vectors

        if self.rows is None:
            return
        for shard in self.rows():
            inside = shard.positions < self.limit
            for code in range(len(DOMAINS)):
                keep = inside & (shard.domains == code)
                if keep.any():
                    raw = shard.matrix[keep] if self.compression is None else self.compression.apply(shard.matrix[keep])
                    yield code, prepare_vectors(raw, self.metric, center=self.center)[1]

    def _build(self, galleries: Mapping[int, np.ndarray]) -> dict[int, Any]:
        """One index per gallery domain: trained on a seeded sample of its test and catalogue items
        (one pass over the catalogue), then filled with them (a second pass)."""
        indexes = {code: self._new_index(gallery.shape[1]) for code, gallery in galleries.items()}
        rngs = {code: np.random.default_rng([self.seed, code]) for code in galleries}
        chance = {code: min(1.0, self.train_size / max(1, len(g) + int(self.catalogue_items.get(DOMAINS[code], 0))))
                  for code, g in galleries.items()}
        if not all(index.is_trained for index in indexes.values()):
            samples = {code: [g[rngs[code].random(len(g)) < chance[code]]] for code, g in galleries.items()}
            for code, block in self._shards():
                if code in samples:
                    samples[code].append(block[rngs[code].random(len(block)) < chance[code]])
            for code, index in indexes.items():
                if not index.is_trained:
                    index.train(np.ascontiguousarray(np.concatenate(samples[code])))
            del samples
        for code, index in indexes.items():
            index.add(galleries[code])
        for code, block in self._shards():
            self.items_per_size[1, code] += len(block)
            if code in indexes:
                indexes[code].add(block)
        return indexes

    def search(self, request: SearchRequest) -> SearchRun:
        started = time.perf_counter()
        task_data, tasks = request.task_data, request.tasks
        hits: dict[str, FirstHits] = {}
        searches = 0
        with faiss_threads(request.threads):
            galleries = {DOMAINS.index(task_data[task].gallery_set): task_data[task].gallery for task in tasks}
            indexes = self._build(galleries)
            built = time.perf_counter()
            if request.on_start is not None:
                request.on_start(sum(len(task_data[task].queries) for task in tasks), "queries")
            for task in tasks:
                index = indexes[DOMAINS.index(task_data[task].gallery_set)]
                hits[task], n = self._first_hits(index, task_data[task], request.max_k, request.on_progress)
                searches += n
            del indexes
        searched = time.perf_counter()
        counters = {name: 0 for name in COUNTERS}
        if self.agreement_queries:
            self._agree(request, hits, counters)
        self.timing = {"index_build_s": round(built - started, 4), "index_search_s": round(searched - built, 4),
                       "agreement_s": round(time.perf_counter() - searched, 4)}
        counters.update(faiss_searches=searches, queries_censored=sum(int(h.censored.sum()) for h in hits.values()))
        engine: dict[str, Any] = {"name": self.name}
        if self.exact is not None:
            engine.update(self.exact.runner.describe(), test_engine=self.exact.base.name)
        return SearchRun(hits=hits, counters=counters, engine=engine, items_per_size=self.items_per_size,
                         protocol=self.protocol_record(), agreement=self.agreement, timing=self.timing)

    def _first_hits(self, index: Any, data: TaskData, max_k: int,
                    on_progress: Callable[[int], None] | None) -> tuple[FirstHits, int]:
        """Counts from each query's approximate candidate list (misses beyond the list are censored)."""
        scored = data.n_relevant() > 0
        rows_all = np.flatnonzero(scored)
        n_gallery = len(data.gallery)
        k = int(min(index.ntotal, max_k + data.n_excluded().max(initial=0)))
        a = np.zeros(len(rows_all), dtype=np.int64)
        t, p, censored = np.zeros_like(a), np.ones_like(a), np.zeros(len(rows_all), dtype=bool)
        searches = 0
        for start in range(0, len(rows_all), QUERY_BATCH):
            rows = rows_all[start:start + QUERY_BATCH]
            scores, ids = index.search(np.ascontiguousarray(data.queries[rows]), k)
            searches += 1
            test = (ids >= 0) & (ids < n_gallery)
            column = np.where(test, ids, 0)
            relevant = test & (data.gallery_products[column] == data.query_products[rows, None])
            eligible = (ids >= 0) & (~test | eligible_mask(data, rows, column))
            batch_a, batch_t, batch_p, has = counts_from_scores(scores, relevant, eligible)
            block = slice(start, start + len(rows))
            a[block] = np.where(has, batch_a, max_k)
            t[block] = np.where(has, batch_t, 0)
            p[block] = np.where(has, np.maximum(batch_p, 1), 1)
            censored[block] = ~has | (batch_a >= max_k)
            a[block] = np.where(censored[block], max_k, a[block])
            t[block] = np.where(censored[block], 0, t[block])
            p[block] = np.where(censored[block], 1, p[block])
            if on_progress is not None:
                on_progress(len(rows))
        return FirstHits(scored=scored, a=a, t=t, p=p, censored=censored), searches

    def _agree(self, request: SearchRequest, hits: Mapping[str, FirstHits], counters: dict[str, int]) -> None:
        """Exact counts of seeded sample queries (decided by the exactness core, extended by the
        exact catalogue composition), compared with the approximate ones."""
        samples: dict[str, np.ndarray] = {}
        exact_hits: dict[str, FirstHits] = {}
        for task in request.tasks:
            data, approx = request.task_data[task], hits[task]
            scored = np.flatnonzero(approx.scored)
            sample = agreement_sample(task, scored, self.agreement_queries, self.seed)
            samples[task] = sample
            judge = judge_task(data, FP32)
            a = np.zeros(len(scored), dtype=np.int64)
            t, p = np.zeros_like(a), np.ones_like(a)
            slot = np.searchsorted(scored, sample)
            a[slot], t[slot], settled = row_counts(data, judge, sample)
            p[slot] = judge.p[sample]
            counters["pairs_settled"] += settled
            counters["relevant_settled"] += judge.relevant_settled
            exact_hits[task] = FirstHits(scored=approx.scored, a=a, t=t, p=p, censored=np.zeros(len(a), dtype=bool))
        if self.exact is not None:
            by_size, *_ = self.exact.extend(request.with_(exact_censored=True), exact_hits, only=samples)
            exact_hits = by_size[-1]
        self.reference = exact_hits  # the exact counts the agreement was measured against
        self.agreement = {task: agreement(hits[task], exact_hits[task], samples[task], max(self.ks), self.columns)
                          for task in request.tasks}
