"""Public entry points: :func:`evaluate` and :func:`validate`.

The command line calls exactly these; a training loop can too (pass arrays instead of paths:
numpy arrays or torch tensors on any device, any float dtype, with ``requires_grad`` or not).
The data path: read + validate (:mod:`ropebench.io`) → prepare vectors per domain → an engine's
first-hit counts (:mod:`ropebench.engines`) → measures (:mod:`ropebench.measures`) → the result
(:mod:`ropebench.results`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ropebench import query_table
from ropebench.dataset import Dataset
from ropebench.engines import Engine, FirstHits, TaskData, get_engine
from ropebench.errors import UsageError
from ropebench.measures import count_tied, measure_columns, summarize
from ropebench.progress import Progress
from ropebench.protocol import DEFAULT_KS, DOMAINS, METRICS, TIE_POLICIES, parse_ks, parse_tasks, split_task
from ropebench.results import EvaluationResult, TaskResult

__all__ = ["evaluate", "validate", "evaluate_dataset"]


def validate(
    submission: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    embeddings: Any = None,
    domains: Sequence[Any] | None = None,
    product_ids: Sequence[Any] | None = None,
    item_ids: Sequence[Any] | None = None,
    group_ids: Sequence[Any] | None = None,
    metric: str = "cosine",
) -> Dataset:
    """Run only the validation step; return the validated :class:`~ropebench.dataset.Dataset`.

    Pass either ``submission`` (a parquet path, optionally with ``manifest``) or arrays.

    Raises:
        DataError: every problem found, at once.
        UsageError: both or neither of paths and arrays, or an unknown metric.
    """
    from ropebench.io.validation import dataset_from_arrays, load_dataset

    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}: choose from {', '.join(METRICS)}")
    if submission is not None:
        if embeddings is not None:
            raise UsageError("pass either a submission path or embeddings arrays, not both")
        return load_dataset(submission, manifest, metric=metric)
    if embeddings is None or domains is None or product_ids is None:
        raise UsageError("pass a submission path, or embeddings= with domains= and product_ids=")
    if manifest is not None:
        raise UsageError("manifest= goes with a submission path; with arrays, pass domains= and product_ids=")
    return dataset_from_arrays(embeddings, domains, product_ids, item_ids=item_ids, group_ids=group_ids,
                               metric=metric)


def evaluate(
    submission: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    embeddings: Any = None,
    domains: Sequence[Any] | None = None,
    product_ids: Sequence[Any] | None = None,
    item_ids: Sequence[Any] | None = None,
    group_ids: Sequence[Any] | None = None,
    metric: str = "cosine",
    ties: str = "expected",
    ks: str | Sequence[int] = DEFAULT_KS,
    tasks: str | Sequence[str] | None = None,
    threads: int | None = None,
    engine: str | Engine | None = None,
    progress: bool = False,
    ci: bool = True,
    by: str | None = None,
    per_query: bool | None = None,
    distractors: Sequence[str | os.PathLike[str]] | None = None,
    distractor_sizes: str | Sequence[int | str] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    index: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    agreement_queries: int = 2000,
) -> EvaluationResult:
    """Score a submission on every requested task with exact search.

    Args:
        submission: parquet file or per-domain directory; or None with arrays.
        manifest: ground-truth parquet; without it the submission must carry ``domain`` and
            ``product_id`` columns.
        embeddings: ``(n, d)`` float array or tensor (instead of a path); never modified.
        domains, product_ids, item_ids, group_ids: ``(n,)`` labels going with ``embeddings``.
        metric: the similarity: ``cosine`` (default), ``ip`` or ``l2``.
        ties: ``expected`` (default), ``pessimistic`` or ``optimistic``.
        ks: cut-offs, e.g. ``(1, 5, 10, 20, 50)`` or ``"1,5,10"``.
        tasks: e.g. ``"P2V,V2P"``, ``"cross"``, ``"intra"``; default all nine.
        threads: worker/BLAS threads; default all cores.
        engine: ``one-pass`` (default) or ``faiss``, or an engine object.
        progress: draw a progress bar on stderr (only when it is a terminal).
        ci: attach each task's 95% product-level bootstrap interval of every measure
            (10,000 resamples, seed 0) as ``tasks[T].ci``; False skips it (a training loop
            that wants only the numbers).
        by: ``"category"``: also report every task's numbers per manifest category
            (``result.by_category``).
        per_query: accepted for compatibility and ignored: every result has ``per_query``.
        distractors: catalogue parquet files or directories whose items join every task's gallery
            of their domain (docs/scale.md); validated before any search, streamed by shard.
        distractor_sizes: nested catalogue prefixes reported in one pass, e.g. ``"0,1e5,1e6,all"``.
        scheduler, workers: ``engine="dask"``: a running scheduler's address, or a local cluster's size.
        index, nprobe, ef_search: approximate search with a ``faiss.index_factory`` index
            (``protocol.search = "approximate"``).
        agreement_queries: with ``index``: queries per task checked against exact search.

    Returns:
        EvaluationResult: ``.tasks[TASK]["R@1"]``, ``.per_query``, ``.summary()``, ``.to_json()``.
    """
    started = time.perf_counter()
    ks = parse_ks(ks)
    task_list = parse_tasks(tasks)
    _check_options(ties, threads)
    at_scale = bool(distractors) or distractor_sizes is not None or index is not None or engine == "dask" \
        or scheduler is not None or workers is not None
    search_engine = None if engine == "dask" else get_engine(engine)  # dask: see ropebench.scale
    dataset = validate(submission, manifest=manifest, embeddings=embeddings, domains=domains,
                       product_ids=product_ids, item_ids=item_ids, group_ids=group_ids, metric=metric)
    loaded = time.perf_counter()
    from ropebench.provenance import input_record

    submission_info, manifest_info = input_record(submission, manifest, dataset)
    if at_scale:
        from ropebench.scale import evaluate_at_scale

        return evaluate_at_scale(
            dataset, distractors=distractors, distractor_sizes=distractor_sizes, engine=search_engine or engine,
            scheduler=scheduler, workers=workers, index=index, nprobe=nprobe, ef_search=ef_search,
            agreement_queries=agreement_queries, metric=metric, ties=ties, ks=ks, tasks=task_list, threads=threads,
            progress=progress, submission_info=submission_info, manifest_info=manifest_info,
            load_seconds=loaded - started, started=started, ci=ci, by=by)
    return evaluate_dataset(
        dataset, metric=metric, ties=ties, ks=ks, tasks=task_list, threads=threads, engine=search_engine,
        progress=progress, submission_info=submission_info, manifest_info=manifest_info,
        load_seconds=loaded - started, started=started, ci=ci, by=by,
    )


def _check_options(ties: str, threads: int | None) -> None:
    if ties not in TIE_POLICIES:
        raise UsageError(f"unknown tie policy {ties!r}: choose from {', '.join(TIE_POLICIES)}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[int]:
    """Run BLAS (through threadpoolctl) with ``threads`` threads; yields the count used."""
    count = threads or os.cpu_count() or 1
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=count):
        yield count


def evaluate_dataset(
    dataset: Dataset,
    *,
    metric: str = "cosine",
    ties: str = "expected",
    ks: Sequence[int] = DEFAULT_KS,
    tasks: Sequence[str] | None = None,
    threads: int | None = None,
    engine: str | Engine | None = None,
    progress: bool = False,
    submission_info: Mapping[str, Any] | None = None,
    manifest_info: Mapping[str, Any] | None = None,
    load_seconds: float = 0.0,
    started: float | None = None,
    ci: bool = True,
    by: str | None = None,
) -> EvaluationResult:
    """Score a validated dataset; see :func:`evaluate` for the arguments.

    The dataset's embedding matrix is split into prepared per-domain copies and then no longer
    referenced here, so a caller that drops its own reference gets the memory back.
    """
    from ropebench import __version__
    from ropebench.engines.exact import l2_center, prepare_vectors
    from ropebench.provenance import environment, utc_now

    started = time.perf_counter() if started is None else started
    ks = parse_ks(ks)
    task_list = parse_tasks(tasks)
    _check_options(ties, threads)
    if metric not in METRICS:
        raise UsageError(f"unknown metric {metric!r}: choose from {', '.join(METRICS)}")
    search_engine = get_engine(engine)
    if by not in (None, "category"):
        raise UsageError(f"--by {by!r}: the only grouping is 'category'")
    if by == "category" and dataset.categories is None:
        raise UsageError("--by category needs a manifest with a 'category' column. Fix: add the column "
                         "to the manifest, or drop --by")
    if submission_info is None:
        submission_info, manifest_info = _array_record(dataset), None
    embeddings, dataset = dataset.embeddings, dataset.without_embeddings()
    if embeddings is None:
        raise UsageError("the dataset has no embeddings (it was made by without_embeddings())")
    bar = Progress(enabled=progress)
    search_started = time.perf_counter()
    with thread_limit(threads) as thread_count:
        members = {code: dataset.members(code) for code in DOMAINS}
        needed = [code for code in DOMAINS if any(code in split_task(task) for task in task_list)]
        center = l2_center(embeddings) if metric == "l2" else None
        # One prepared, contiguous copy per domain, shared by every task (and by both sides of a
        # block unless the metric is l2); no full-size prepared copy is ever made.
        vectors = {code: prepare_vectors(embeddings[members[code]], metric, center=center) for code in needed}
        del embeddings
        task_data = {task: _task_data(dataset, members, task, vectors) for task in task_list}
        run = search_engine.search(
            task_data, task_list, max_k=max(ks), exact_censored=False, threads=thread_count,
            symmetric_scores=metric != "l2",
            on_start=lambda total, unit: bar.start("search", total, unit=unit), on_progress=bar.advance)
        bar.finish()
    del task_data, vectors
    hits_by_task = {task: _beyond_max_k_censored(run.hits[task], max(ks)) for task in task_list}
    results: dict[str, TaskResult] = {}
    columns: dict[str, dict[str, np.ndarray]] = {}
    for task in task_list:
        hits = hits_by_task[task]
        columns[task] = measure_columns(hits.a, hits.t, hits.p, ks, ties)
        results[task] = TaskResult(
            task=task,
            n_queries=int(hits.scored.sum()),
            n_skipped=int((~hits.scored).sum()),
            n_gallery=int(len(members[split_task(task)[1]])),
            n_tied=count_tied(hits.a, hits.t, ks),
            measures=summarize(hits.a, hits.t, hits.p, ks, ties, columns[task]),
        )
    extra: dict[str, Any] = {}
    searched = time.perf_counter()
    if ci and task_list:
        intervals = query_table.task_intervals_of(dataset, members, task_list, hits_by_task, columns)
        results = {task: replace(result, ci=intervals.get(task)) for task, result in results.items()}
    if by == "category":
        extra["by_category"] = query_table.by_category(dataset, members, task_list, hits_by_task, columns)
        missing = query_table.uncategorised(dataset, members, task_list, hits_by_task, columns)
        if missing:  # null categories: never merged with a category named "None"
            extra["by_category_missing"] = missing
    finished = time.perf_counter()
    protocol = {"metric": metric, "ties": ties, "ks": list(ks), "search": "exact",
                "group_exclusion": dataset.group_codes is not None}
    env = environment(thread_count, faiss_ran=run.counters.get("faiss_searches", 0) > 0)
    env["engine"] = {"name": search_engine.name, "counters": dict(run.counters)}
    return EvaluationResult(
        ropebench_version=__version__,
        created=utc_now(),
        protocol=protocol,
        submission=dict(submission_info),
        manifest=None if manifest_info is None else dict(manifest_info),
        environment=env,
        timing={"load_s": round(load_seconds, 4), "search_s": round(searched - search_started, 4),
                **({"ci_s": round(finished - searched, 4)} if ci else {}),
                "total_s": round(finished - started, 4)},
        tasks=results,
        extra=extra,
        _per_query=query_table.per_query_builder(dataset, members, task_list, hits_by_task, columns, protocol),
    )


def _beyond_max_k_censored(hits: FirstHits, max_k: int) -> FirstHits:
    """Every query with at least max K items above its first hit, recorded one way.

    Such a query misses at every K whatever its exact counts, and whether an engine stopped
    counting it (censored) or counted it fully depends on the order it met the gallery in
    (tiles, FAISS's list among tied scores). Recording all of them as ``a = max K, t = 0, p = 1,
    censored`` makes the per-query table independent of row order and thread count; no measure
    changes (R@K = 0 and a reciprocal rank of 0 at every reported K, no tie).
    """
    beyond = hits.censored | (hits.a >= max_k)
    if not beyond.any():
        return hits
    a, t, p = hits.a.copy(), hits.t.copy(), hits.p.copy()
    a[beyond], t[beyond], p[beyond] = max_k, 0, 1
    return replace(hits, a=a, t=t, p=p, censored=beyond)


def _array_record(dataset: Dataset) -> dict[str, Any]:
    from ropebench.provenance import input_record

    return input_record(None, None, dataset)[0]


def _task_data(dataset: Dataset, members: Mapping[str, np.ndarray], task: str,
               vectors: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> TaskData:
    query_domain, gallery_domain = split_task(task)
    q, g = members[query_domain], members[gallery_domain]
    groups = dataset.group_codes
    intra = query_domain == gallery_domain
    return TaskData(
        queries=vectors[query_domain][0],
        gallery=vectors[gallery_domain][1],
        query_products=dataset.product_codes[q],
        gallery_products=dataset.product_codes[g],
        query_rows=np.arange(len(q), dtype=np.int64) if intra else None,
        query_groups=groups[q] if intra and groups is not None else None,
        gallery_groups=groups[g] if intra and groups is not None else None,
    )
