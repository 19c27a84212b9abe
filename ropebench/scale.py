"""Catalogue-scale evaluation: distractors streamed shard by shard, on this machine or a Dask
cluster, and approximate FAISS indexes with their measured agreement (docs/scale.md).

This module joins the parts: the catalogue on disk (:mod:`ropebench.io.distractors`), the
decomposition over shards (:mod:`ropebench.engines.catalogue`, :mod:`ropebench.engines.settle`),
where shards run (:mod:`ropebench.engines.runners`, :mod:`ropebench.engines.dask`) and the
approximate search (:mod:`ropebench.engines.approximate`). :func:`evaluate_at_scale` wraps the
chosen engine so that :func:`ropebench.evaluation.evaluate_dataset` builds the result as always
(measures, intervals, per-query table), and then adds what the catalogue changes.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ropebench.dataset import Dataset
from ropebench.engines import Engine, FirstHits, SearchRun, TaskData, get_engine
from ropebench.engines.catalogue import ScanContext, ShardResult, build_context, scan_rows
from ropebench.engines.runners import Eta, Runner, ThreadRunner
from ropebench.engines.settle import Accumulator
from ropebench.errors import UsageError
from ropebench.io.distractor_checks import CatalogueInfo, ShardCheck, catalogue_record, check_shard, merge_checks
from ropebench.io.distractors import Catalogue, Shard, plan_catalogue, read_shard
from ropebench.protocol import DEFAULT_KS, DOMAINS, parse_ks

__all__ = ["evaluate", "evaluate_at_scale", "parse_sizes", "CatalogueEngine", "scan_task", "check_task",
           "prepare_catalogue"]


def parse_sizes(sizes: str | Sequence[int | str] | None, n_rows: int) -> tuple[int, ...]:
    """``"0,1e5,1e6,all"`` -> ascending unique item counts; ``all`` (or None) is the whole catalogue.

    Raises:
        UsageError: a size that is not a whole number, negative, or beyond the catalogue.
    """
    if sizes is None:
        return (n_rows,)
    items = sizes.split(",") if isinstance(sizes, str) else list(sizes)
    found, bad = set(), []
    for item in items:
        text = str(item).strip().lower()
        if text == "all":
            found.add(n_rows)
            continue
        try:
            value = float(text)
        except ValueError:
            bad.append(str(item))
            continue
        if value < 0 or value != int(value):
            bad.append(str(item))
        elif int(value) > n_rows:
            raise UsageError(f"--distractor-sizes {item}: the catalogue holds {n_rows:,} items. Fix: use sizes up to "
                             f"{n_rows} or 'all'")
        else:
            found.add(int(value))
    if bad or not found:
        raise UsageError(f"--distractor-sizes: {', '.join(map(repr, bad)) or 'empty'} is not a list of item counts "
                         "(e.g. 0,100000,1e6,all)")
    return tuple(sorted(found))


def check_task(shard: Shard, params: tuple[int, str, np.ndarray | None]) -> ShardCheck:
    """Validate one shard (runs where the shard is read)."""
    dim, metric, center = params
    return check_shard(shard, dim=dim, metric=metric, center=center)


def scan_task(shard: Shard, context: ScanContext) -> ShardResult:
    """Read one shard and scan it for every task (runs where the shard is read)."""
    rows = read_shard(shard)
    return scan_rows(shard.index, rows.positions, rows.domains, rows.matrix, context)


def prepare_catalogue(paths: Sequence[str | os.PathLike[str]], dataset: Dataset, *, metric: str,
                      center: np.ndarray | None, runner: Runner, sizes: str | Sequence[int | str] | None = None,
                      shard_rows: int | None = None, progress: bool = False
                      ) -> tuple[Catalogue, CatalogueInfo, tuple[int, ...]]:
    """Plan a catalogue, parse the sizes asked for, and validate every shard that will be read
    (those below the largest size) against the test set; every problem in one DataError."""
    options = {} if shard_rows is None else {"shard_rows": shard_rows}
    catalogue = plan_catalogue(paths, dim=dataset.dim, **options)
    chosen = parse_sizes(sizes, catalogue.n_rows)
    shards = {shard.index: shard for shard in catalogue.shards if shard.start < chosen[-1]}
    eta = Eta("check distractors", sum(shard.n_rows for shard in shards.values()), enabled=progress)
    checks = []
    for check in runner.map(check_task, list(shards.values()), (dataset.dim, metric, center)):
        checks.append(check)
        eta.advance(shards[check.index].n_rows)
    eta.finish()
    info = merge_checks(checks, catalogue, test_ids=dataset.item_ids, test_products=dataset.product_ids)
    return catalogue, info, chosen


class CatalogueEngine:
    """An engine for the test set plus a catalogue: the test set by ``base``, then every shard by
    ``runner``, then settlement. ``search`` returns the counts at the largest size; the counts at
    every size stay in :attr:`by_size` (index 0: no distractor, index j: through boundary j)."""

    def __init__(self, base: Engine, catalogue: Catalogue, info: CatalogueInfo, runner: Runner, *, metric: str,
                 center: np.ndarray | None, boundaries: Sequence[int], progress: bool = False,
                 name: str | None = None) -> None:
        self.base, self.catalogue, self.info, self.runner = base, catalogue, info, runner
        self.metric, self.center, self.progress = metric, center, progress
        self.boundaries = sorted({int(b) for b in boundaries if b > 0})
        self.name = name or base.name
        self.by_size: list[dict[str, FirstHits]] = []
        self.items_per_size = np.zeros((1, len(DOMAINS)), dtype=np.int64)
        self.timing: dict[str, float] = {}
        self.phases: dict[str, float] = {}  # of the last extend: bands, shards, settlement

    def search(self, task_data: Mapping[str, TaskData], tasks: Sequence[str], *, max_k: int, exact_censored: bool,
               threads: int, symmetric_scores: bool, on_start: Callable[[int, str], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> SearchRun:
        started = time.perf_counter()
        run = self.base.search(task_data, tasks, max_k=max_k, exact_censored=exact_censored, threads=threads,
                               symmetric_scores=symmetric_scores, on_start=on_start, on_progress=on_progress)
        searched = time.perf_counter()
        self.by_size, counters = self.extend(task_data, tasks, run.hits, max_k=max_k, exact_censored=exact_censored)
        self.timing = {"test_search_s": round(searched - started, 4),
                       "distractors_s": round(time.perf_counter() - searched, 4), **self.phases}
        return SearchRun(hits=self.by_size[-1], counters={**run.counters, **counters})

    def extend(self, task_data: Mapping[str, TaskData], tasks: Sequence[str], hits: Mapping[str, FirstHits], *,
               max_k: int, exact_censored: bool, only: Mapping[str, np.ndarray] | None = None
               ) -> tuple[list[dict[str, FirstHits]], dict[str, int]]:
        """First-hit counts of the test set extended by the catalogue, per size (index 0: none).

        ``only``: per task, the queries to extend (the others keep the test set's counts).
        """
        counters = {"distractor_shards": 0, "queries_settled": 0, "band_entries": 0, "distractor_multiply_adds": 0}
        if not self.boundaries:
            return [dict(hits)], counters
        limit = self.boundaries[-1]
        started = time.perf_counter()
        context, _ = build_context(task_data, tasks, hits, metric=self.metric, center=self.center,
                                   distractor_norms=self.info.max_norm, distractor_integers=self.info.integers,
                                   boundaries=self.boundaries, max_k=max_k, exact_censored=exact_censored, only=only)
        shards = [shard for shard in self.catalogue.shards if shard.start < limit]
        accumulator = Accumulator(context)
        prepared = time.perf_counter()
        sizes = {shard.index: min(shard.n_rows, limit - shard.start) for shard in shards}
        eta = Eta("distractors", sum(sizes.values()), enabled=self.progress)
        for result in self.runner.map(scan_task, shards, context):
            accumulator.add(result)
            eta.advance(sizes[result.index])
        eta.finish()
        scanned = time.perf_counter()
        by_size, settled = accumulator.hits(task_data, hits)
        self.items_per_size = accumulator.items_per_size()
        self.phases = {"bands_s": round(prepared - started, 4), "shards_s": round(scanned - prepared, 4),
                       "settle_s": round(time.perf_counter() - scanned, 4)}
        counters.update(settled, distractor_shards=len(shards), distractor_multiply_adds=accumulator.multiply_adds)
        return by_size, counters


def _runner(engine: str | Engine | None, scheduler: str | None, workers: int | None, threads: int | None) -> Runner:
    if engine == "dask":
        from ropebench.engines.dask import DaskRunner

        return DaskRunner(scheduler, workers)
    if scheduler is not None or workers is not None:
        raise UsageError("--scheduler and --workers go with --engine dask. Fix: add --engine dask, or drop them")
    return ThreadRunner(threads or os.cpu_count() or 1)


def evaluate_at_scale(dataset: Dataset, *, distractors: Sequence[str | os.PathLike[str]] | None = None,
                      distractor_sizes: str | Sequence[int | str] | None = None, engine: str | Engine | None = None,
                      scheduler: str | None = None, workers: int | None = None, index: str | None = None,
                      nprobe: int | None = None, ef_search: int | None = None, agreement_queries: int = 2000,
                      seed: int = 0, metric: str = "cosine", ks: str | Sequence[int] = DEFAULT_KS,
                      threads: int | None = None, progress: bool = False, shard_rows: int | None = None,
                      runner: Runner | None = None, **options: Any) -> Any:
    """Evaluate a validated test set with distractors, on a Dask cluster and/or approximately.

    Args:
        dataset: the validated test set (:func:`ropebench.validate`).
        distractors: catalogue parquet files or directories (validated here, before any search).
        distractor_sizes: nested prefixes to report, e.g. ``"0,100000,1e6,all"`` (default ``all``).
        engine: the test set's engine (``one-pass``, ``faiss``) or ``dask`` (one-pass for the test
            set, the shards on a cluster).
        scheduler, workers: ``dask`` only: an existing scheduler's address, or a local cluster's size.
        index, nprobe, ef_search, agreement_queries, seed: approximate search (see
            :mod:`ropebench.engines.approximate`).
        shard_rows: merge row groups into shards of up to this many rows.
        runner: run shards here (e.g. a :class:`~ropebench.engines.dask.DaskRunner` on a cluster the
            caller manages; it is not closed).
        options: the rest of :func:`ropebench.evaluation.evaluate_dataset`'s arguments
            (``ties``, ``tasks``, ``ci``, ``by``, ``submission_info`` …).

    Returns:
        EvaluationResult with ``distractors`` (paths, sha256, items per domain, sizes) and, with
        several sizes, ``distractor_curve`` ``{"sizes", "tasks": {task: {measure: [...]}}, "n_gallery",
        "n_tied"}``; with ``index``, ``protocol.search = "approximate"`` and ``agreement`` per task.
    """
    from ropebench.engines.exact import l2_center
    from ropebench.evaluation import evaluate_dataset

    started = time.perf_counter()
    if dataset.embeddings is None:
        raise UsageError("the dataset has no embeddings (it was made by without_embeddings())")
    if distractor_sizes is not None and not distractors:
        raise UsageError("--distractor-sizes needs --distractors. Fix: add the catalogue, or drop the sizes")
    if engine == "dask" and not distractors and runner is None:
        raise UsageError("--engine dask runs distractor shards on a cluster; there is no catalogue to run. Fix: add "
                         "--distractors, or use --engine one-pass")
    if index is not None and (engine == "dask" or runner is not None):
        raise UsageError("--index builds and searches its index in this process. Fix: drop --engine dask")
    center = l2_center(dataset.embeddings) if metric == "l2" else None
    owned = runner is None
    runner = runner or _runner(engine, scheduler, workers, threads)
    try:
        catalogue = info = None
        sizes: tuple[int, ...] = (0,)
        if distractors:
            catalogue, info, sizes = prepare_catalogue(list(distractors), dataset, metric=metric, center=center,
                                                       runner=runner, sizes=distractor_sizes, shard_rows=shard_rows,
                                                       progress=progress)
        checked = time.perf_counter()
        base = get_engine(None if engine == "dask" else engine)
        exact = None if catalogue is None or info is None else CatalogueEngine(
            base, catalogue, info, runner, metric=metric, center=center, boundaries=sizes, progress=progress,
            name="dask" if engine == "dask" or runner.name == "dask" else None)
        search: Any = exact or base
        if index is not None:
            from ropebench.engines.approximate import ApproximateEngine

            if len(sizes) > 1:
                raise UsageError("--index evaluates one catalogue size. Fix: give one --distractor-sizes value")
            rows = None if catalogue is None else (lambda: (read_shard(s) for s in catalogue.shards
                                                            if s.start < sizes[-1]))
            search = ApproximateEngine(index, nprobe=nprobe, ef_search=ef_search, agreement_queries=agreement_queries,
                                       seed=seed, rows=rows, limit=sizes[-1], exact=exact, progress=progress,
                                       metric=metric, center=center, ks=parse_ks(ks),
                                       ties=options.get("ties", "expected"))
        options["load_seconds"] = options.get("load_seconds", 0.0) + checked - started
        result = evaluate_dataset(dataset, metric=metric, ks=parse_ks(ks), threads=threads, engine=search,
                                  progress=progress, **options)
        return _with_catalogue(result, dataset, search, exact, catalogue, info, sizes, runner, checked - started)
    finally:
        if owned:
            runner.close()


def _with_catalogue(result: Any, dataset: Dataset, search: Any, exact: CatalogueEngine | None,
                    catalogue: Catalogue | None, info: CatalogueInfo | None, sizes: Sequence[int], runner: Runner,
                    check_seconds: float) -> Any:
    """The result of :func:`evaluate_dataset` with what the catalogue, the runner and an
    approximate index add."""
    from ropebench.measures import count_tied, summarize

    extra = dict(result.extra)
    environment = dict(result.environment)
    engine = dict(environment.get("engine", {}))
    protocol = dict(result.protocol)
    tasks = dict(result.tasks)
    timing = dict(result.timing)
    test_counts = dataset.domain_counts()
    if catalogue is not None and info is not None and exact is not None:
        # Row j of items_per_size / by_size is the prefix through the j-th positive size.
        rows = [0 if size == 0 else exact.boundaries.index(size) + 1 for size in sizes]
        items = exact.items_per_size if search is exact else getattr(search, "items_per_size", exact.items_per_size)
        last = items[rows[-1]] if len(items) > rows[-1] else np.zeros(len(DOMAINS), dtype=np.int64)
        for task, value in tasks.items():
            tasks[task] = dataclasses.replace(value, n_gallery=value.n_gallery + int(last[DOMAINS.index(task[2])]))
        extra["distractors"] = {**catalogue_record(catalogue, info), "sizes": list(sizes),
                                "n_items": {code: int(last[i]) for i, code in enumerate(DOMAINS)},
                                "catalogue_rows": catalogue.n_rows, "shards": len(catalogue.shards)}
        if len(sizes) > 1 and search is exact:
            ks, ties = result.ks, result.protocol["ties"]
            curve: dict[str, Any] = {"sizes": list(sizes), "tasks": {}, "n_gallery": {}, "n_tied": {}}
            for task in tasks:
                by_size = [exact.by_size[row][task] for row in rows]
                values = [summarize(h.a, h.t, h.p, ks, ties) for h in by_size]
                curve["tasks"][task] = {name: [v[name] for v in values] for name in result.measure_names}
                column = DOMAINS.index(task[2])
                curve["n_gallery"][task] = [test_counts[task[2]] + int(items[row][column]) for row in rows]
                curve["n_tied"][task] = [count_tied(h.a, h.t, ks) for h in by_size]
            extra["distractor_curve"] = curve
        engine.update(runner.describe(), test_engine=exact.base.name)
        timing["distractors_check_s"] = round(check_seconds, 4)
        if search is exact:
            timing.update(exact.timing)
    if hasattr(search, "protocol_record"):
        protocol.update(search.protocol_record())
        extra["agreement"] = search.agreement
        timing.update(search.timing)
    environment["engine"] = engine
    per_query = result._per_query
    if protocol != result.protocol and per_query is not None:
        per_query = _relabel(result, protocol)
    return dataclasses.replace(result, tasks=tasks, extra=extra, environment=environment, protocol=protocol,
                               timing=timing, _per_query=per_query)


def _relabel(result: Any, protocol: Mapping[str, Any]) -> Callable[[], Any]:
    """The per-query table builder, with the final protocol in its metadata."""
    import json

    from ropebench.results import PER_QUERY_METADATA_KEY

    def build() -> Any:
        table = result.per_query
        metadata = {PER_QUERY_METADATA_KEY: json.dumps({"protocol": dict(protocol)}).encode()}
        return table.replace_schema_metadata(metadata)

    return build


def evaluate(submission: str | os.PathLike[str] | None = None, *, manifest: str | os.PathLike[str] | None = None,
             metric: str = "cosine", progress: bool = False, **options: Any) -> Any:
    """:func:`ropebench.evaluate` with the catalogue options of :func:`evaluate_at_scale`.

    Takes a submission path (with ``manifest``) or arrays (``embeddings=``, ``domains=``,
    ``product_ids=``, ``item_ids=``, ``group_ids=``), like :func:`ropebench.evaluate`.
    """
    from ropebench.evaluation import validate
    from ropebench.provenance import input_record

    started = time.perf_counter()
    arrays = {key: options.pop(key) for key in ("embeddings", "domains", "product_ids", "item_ids", "group_ids")
              if key in options}
    dataset = validate(submission, manifest=manifest, metric=metric, **arrays)
    submission_info, manifest_info = input_record(submission, manifest, dataset)
    return evaluate_at_scale(dataset, metric=metric, progress=progress, submission_info=submission_info,
                             manifest_info=manifest_info, load_seconds=time.perf_counter() - started,
                             started=started, **options)
