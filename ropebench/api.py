"""Public entry points: :func:`evaluate` and :func:`validate` (DESIGN.md §2, §8).

The command line calls exactly these; a training loop can too (pass arrays instead of paths).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ropebench.domains import DOMAINS, parse_tasks, split_task
from ropebench.errors import UsageError
from ropebench.metrics import TIE_POLICIES, count_tied, hit_probabilities, parse_ks, reciprocal_rank, summarize
from ropebench.progress import Progress
from ropebench.results import EvaluationResult, TaskResult
from ropebench.validate import METRICS, Dataset, dataset_from_arrays, load_dataset

__all__ = ["evaluate", "validate", "evaluate_dataset"]

ENGINES = ("one-pass", "per-task")


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
    """Run only the validation step; return the validated :class:`~ropebench.validate.Dataset`.

    Pass either ``submission`` (a parquet path, optionally with ``manifest``) or arrays.

    Raises:
        DataError: every problem found, at once.
        UsageError: both or neither of paths and arrays, or an unknown metric.
    """
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
    ks: str | Sequence[int] = (1, 5, 10, 20, 50),
    tasks: str | Sequence[str] | None = None,
    threads: int | None = None,
    per_query: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Score a submission on every requested task with exact search.

    Args:
        submission: parquet file or per-domain directory (DESIGN.md §3); or None with arrays.
        manifest: ground-truth parquet; without it the submission must carry ``domain`` and
            ``product_id`` columns.
        embeddings: ``(n, d)`` float array (instead of a path); never modified.
        domains, product_ids, item_ids, group_ids: ``(n,)`` labels going with ``embeddings``.
        metric: ``cosine`` (default), ``ip`` or ``l2``.
        ties: ``expected`` (default), ``pessimistic`` or ``optimistic``.
        ks: cut-offs, e.g. ``(1, 5, 10, 20, 50)`` or ``"1,5,10"``.
        tasks: subset such as ``"P2V,V2P"``; default all nine in DESIGN.md §1 order.
        threads: FAISS/BLAS threads; default all cores.
        per_query: also build ``result.per_query`` (one row per scored query and task).
        progress: draw a progress bar on stderr (only when it is a terminal).

    Returns:
        EvaluationResult: ``.tasks[TASK]["R@1"]``, ``.to_json()`` (DESIGN.md §4).
    """
    started = time.perf_counter()
    ks = parse_ks(ks)
    task_list = parse_tasks(tasks)
    if ties not in TIE_POLICIES:
        raise UsageError(f"unknown tie policy {ties!r}: choose from {', '.join(TIE_POLICIES)}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    dataset = validate(submission, manifest=manifest, embeddings=embeddings, domains=domains,
                       product_ids=product_ids, item_ids=item_ids, group_ids=group_ids, metric=metric)
    loaded = time.perf_counter()
    if submission is not None:
        from ropebench.files import sha256_file

        submission_info: dict[str, Any] = {"path": str(submission), "sha256": sha256_file(submission)}
        manifest_info = None if manifest is None else {"path": str(manifest), "sha256": sha256_file(manifest)}
    else:
        digest = hashlib.sha256(memoryview(np.ascontiguousarray(dataset.embeddings)).cast("B")).hexdigest()
        submission_info, manifest_info = {"path": None, "sha256": digest}, None
    submission_info.update(n_items=dataset.n_items, dim=dataset.dim, dtype=dataset.dtype)
    return evaluate_dataset(
        dataset, metric=metric, ties=ties, ks=ks, tasks=task_list, threads=threads, per_query=per_query,
        progress=progress, submission_info=submission_info, manifest_info=manifest_info,
        load_seconds=loaded - started, started=started, release_embeddings=True,
    )


@contextlib.contextmanager
def _thread_limit(threads: int | None) -> Iterator[int]:
    """Run FAISS (OpenMP) and, when threadpoolctl is installed, BLAS with ``threads`` threads."""
    from ropebench.search import faiss_threads

    count = threads or os.cpu_count() or 1
    with faiss_threads(count):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=count)
        with limits:
            yield count


def evaluate_dataset(
    dataset: Dataset,
    *,
    metric: str,
    ties: str,
    ks: tuple[int, ...],
    tasks: tuple[str, ...],
    threads: int | None,
    per_query: bool,
    progress: bool,
    submission_info: dict[str, Any],
    manifest_info: dict[str, Any] | None,
    load_seconds: float,
    started: float,
    engine: str = "one-pass",
    release_embeddings: bool = False,
) -> EvaluationResult:
    """Score a validated dataset; see :func:`evaluate` for the arguments.

    ``engine`` (internal): ``one-pass`` (default; :mod:`ropebench.onepass`, each similarity block
    computed once for all tasks) or ``per-task`` (:mod:`ropebench.search`, one FAISS search per
    task). Both give identical counts; the second is kept as the plain reference the tests compare.
    ``release_embeddings``: the one-pass engine drops ``dataset.embeddings`` once it has its
    per-domain prepared copies (the caller must not need them afterwards); peak memory then
    holds one copy of the vectors instead of two.
    """
    from ropebench import __version__
    from ropebench.provenance import environment, utc_now
    from ropebench.search import TaskData, first_hit_counts, prepare_vectors

    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}: choose from {', '.join(ENGINES)}")
    bar = Progress(enabled=progress)
    results: dict[str, TaskResult] = {}
    rows: list[Any] = []
    search_started = time.perf_counter()
    with _thread_limit(threads) as thread_count:
        members = {code: np.flatnonzero(dataset.domains == i) for i, code in enumerate(DOMAINS)}
        if engine == "one-pass":
            all_hits = _one_pass(dataset, members, tasks, metric, ks, per_query, thread_count, bar,
                                 release_embeddings)
        else:
            query_vectors, gallery_vectors = prepare_vectors(dataset.embeddings, metric)
            all_hits = {}
            for task in tasks:
                data = _task_data(dataset, members, task, query_vectors, gallery_vectors, TaskData)
                bar.start(task, len(data.queries))
                all_hits[task] = first_hit_counts(data, max_k=max(ks), exact_censored=per_query,
                                                  on_progress=bar.advance)
        for task in tasks:
            hits = all_hits[task]
            results[task] = TaskResult(
                task=task,
                n_queries=int(hits.scored.sum()),
                n_skipped=int((~hits.scored).sum()),
                n_gallery=int(len(members[split_task(task)[1]])),
                n_tied=count_tied(hits.a, hits.t, ks),
                metrics=summarize(hits.a, hits.t, hits.p, ks, ties),
            )
            if per_query:
                rows.append(_per_query_rows(dataset, members, task, hits, ks, ties))
        bar.finish()
    finished = time.perf_counter()
    per_query_frame = None
    if per_query:
        import pandas as pd

        per_query_frame = pd.concat(rows, ignore_index=True) if rows else None
    return EvaluationResult(
        ropebench_version=__version__,
        created=utc_now(),
        protocol={"metric": metric, "ties": ties, "ks": list(ks), "search": "exact",
                  "group_exclusion": dataset.group_codes is not None},
        submission=submission_info,
        manifest=manifest_info,
        environment=environment(thread_count),
        timing={"load_s": round(load_seconds, 4), "search_s": round(finished - search_started, 4),
                "total_s": round(finished - started, 4)},
        tasks=results,
        per_query=per_query_frame,
    )


def _one_pass(dataset, members, tasks, metric, ks, per_query, thread_count, bar, release_embeddings):
    """All tasks' first-hit counts with :func:`ropebench.onepass.one_pass_first_hits`."""
    from ropebench.onepass import one_pass_first_hits
    from ropebench.search import TaskData, prepare_vectors

    needed = [code for code in DOMAINS if any(code in split_task(task) for task in tasks)]
    # One prepared, contiguous copy per domain, shared by every task (and by both sides of a
    # block unless the metric is l2); no full-size prepared copy is ever made.
    domain_vectors = {code: prepare_vectors(dataset.embeddings[members[code]], metric) for code in needed}
    if release_embeddings:
        dataset.release_embeddings()
    symmetric = metric != "l2"
    task_data = {task: _task_data(dataset, members, task, None, None, TaskData, domain_vectors) for task in tasks}
    return one_pass_first_hits(domain_vectors, task_data, tasks, max_k=max(ks), exact_censored=per_query,
                               threads=thread_count, symmetric_scores=symmetric,
                               on_start=lambda total: bar.start("search", total, unit="tiles"), on_progress=bar.advance)


def _task_data(dataset, members, task, query_vectors, gallery_vectors, task_data_class, domain_vectors=None):
    query_domain, gallery_domain = split_task(task)
    q, g = members[query_domain], members[gallery_domain]
    groups = dataset.group_codes
    intra = query_domain == gallery_domain
    return task_data_class(
        queries=query_vectors[q] if domain_vectors is None else domain_vectors[query_domain][0],
        gallery=gallery_vectors[g] if domain_vectors is None else domain_vectors[gallery_domain][1],
        query_products=dataset.product_codes[q],
        gallery_products=dataset.product_codes[g],
        query_rows=np.arange(len(q), dtype=np.int64) if intra else None,
        query_groups=groups[q] if intra and groups is not None else None,
        gallery_groups=groups[g] if intra and groups is not None else None,
    )


def _per_query_rows(dataset, members, task, hits, ks, ties):
    """One row per scored query: ids, first-hit counts and the hit probability at each K."""
    import pandas as pd

    query_rows = members[split_task(task)[0]][hits.scored]
    probabilities = hit_probabilities(hits.a, hits.t, hits.p, ks, ties)
    frame = pd.DataFrame({
        "task": task,
        "item_id": dataset.item_ids[query_rows],
        "product_id": dataset.product_ids[query_rows],
        "a": hits.a, "t": hits.t, "p": hits.p,
        **{f"hit@{k}": probabilities[:, i] for i, k in enumerate(ks)},
        f"rr@{max(ks)}": reciprocal_rank(hits.a, hits.t, hits.p, max(ks), ties),
    })
    # Canonical order, so the file does not depend on the submission's row order.
    order = np.argsort(dataset.item_ids[query_rows], kind="stable")
    return frame.iloc[order].reset_index(drop=True)
