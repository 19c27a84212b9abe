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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ropebench import query_table
from ropebench.compress import compress_dataset, compression_protocol, parse_compression
from ropebench.dataset import Dataset
from ropebench.engines import (
    Engine,
    FirstHits,
    SearchRequest,
    SearchRun,
    get_composition,
    get_engine,
    get_runner,
    resolve,
)
from ropebench.errors import UsageError
from ropebench.measures import count_tied, counts_needed, map_depth, measure_columns, summarize
from ropebench.options import (
    ApproximateOptions,
    CatalogueOptions,
    Options,
    ProtocolOptions,
    ReportOptions,
    SearchOptions,
    group_options,
)
from ropebench.progress import Progress
from ropebench.protocol import (
    DEFAULT_MEASURES,
    DOMAINS,
    METRICS,
    TIE_POLICIES,
    measure_names,
    parse_ks,
    parse_measures,
    parse_tasks,
    split_task,
)
from ropebench.results import EvaluationResult, TaskResult
from ropebench.tasks import Vectors, build_task_data, prepare_domains

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
    resident: bool = False,
) -> Dataset:
    """Run only the validation step; return the validated :class:`~ropebench.dataset.Dataset`.

    Pass either ``submission`` (a parquet path, optionally with ``manifest``) or arrays.
    ``resident``: ``embeddings`` is a torch tensor checked on its device and kept there
    (``Dataset.resident``; see :func:`evaluate` with ``engine="torch"``).

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
                               metric=metric, resident=resident)


def evaluate(
    submission: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    embeddings: Any = None,
    domains: Sequence[Any] | None = None,
    product_ids: Sequence[Any] | None = None,
    item_ids: Sequence[Any] | None = None,
    group_ids: Sequence[Any] | None = None,
    protocol: ProtocolOptions | None = None,
    search: SearchOptions | None = None,
    catalogue: CatalogueOptions | None = None,
    approximate: ApproximateOptions | None = None,
    report: ReportOptions | None = None,
    per_query: bool | None = None,
    **keywords: Any,
) -> EvaluationResult:
    """Score a submission on every requested task with exact search.

    Args:
        submission: parquet file or per-domain directory; or None with arrays.
        manifest: ground-truth parquet; without it the submission must carry ``domain`` and
            ``product_id`` columns.
        embeddings: ``(n, d)`` float array or tensor (instead of a path); never modified. A CUDA
            tensor searched with ``engine="torch"`` stays on its device: validated, prepared and
            settled there, the rows copied to the host counted (docs/screening.md, "CUDA tensors").
        domains, product_ids, item_ids, group_ids: ``(n,)`` labels going with ``embeddings``.
        protocol, search, catalogue, approximate, report: the options as objects
            (:mod:`ropebench.options`); or as plain keywords, each overriding its object's field:
        metric: the similarity: ``cosine`` (default), ``ip`` or ``l2``.
        ties: ``expected`` (default), ``pessimistic`` or ``optimistic``.
        ks: cut-offs, e.g. ``(1, 5, 10, 20, 50)`` or ``"1,5,10"``.
        tasks: e.g. ``"P2V,V2P"``, ``"cross"``, ``"intra"``; default all nine.
        threads: worker/BLAS threads; default all cores.
        engine: ``one-pass`` (default), ``faiss``, ``torch`` (extra ``ropebench[torch]``), ``dask``
            (one-pass, with the distractor shards on a Dask cluster), or an engine object.
        device: ``engine="torch"``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; default the device of a
            torch ``embeddings`` tensor, else cuda when available, else cpu.
        screen: ``engine="torch"``: ``fp32`` or ``bf16`` (docs/screening.md); default measured once
            per process. Either way the counts are the default engine's.
        progress: draw a progress bar on stderr (only when it is a terminal).
        ci: attach each task's 95% product-level bootstrap interval of every measure
            (10,000 resamples, seed 0) as ``tasks[T].ci``; False skips it (a training loop
            that wants only the numbers).
        by: ``"category"``: also report every task's numbers per manifest category
            (``result.by_category``).
        distractors: catalogue parquet files or directories whose items join every task's gallery
            of their domain (docs/scale.md); validated before any search, streamed by shard.
        distractor_sizes: nested catalogue prefixes reported in one pass, e.g. ``"0,1e5,1e6,all"``.
        scheduler, workers: ``engine="dask"``, or ``engine="torch"`` with distractors (its shards then
            screened by torch on the workers): a running scheduler's address, or a local cluster's size.
        shard_rows, runner: merge row groups into shards of up to this many rows; run shards on a
            runner the caller manages.
        index, nprobe, ef_search: approximate search with a ``faiss.index_factory`` index
            (``protocol.search = "approximate"``).
        agreement_queries, seed: with ``index``: queries per task checked against exact search.
        compress: score compressed vectors: ``fp16``, ``int8``, ``binary`` or ``dims=K``
            (:mod:`ropebench.compress`); recorded as ``protocol.compression``.
        per_query: accepted for compatibility and ignored: every result has ``per_query``.

    Returns:
        EvaluationResult: ``.tasks[TASK]["R@1"]``, ``.per_query``, ``.summary()``, ``.to_json()``.
    """
    from ropebench.io.inputs import input_record

    started = time.perf_counter()
    options = group_options({"protocol": protocol, "search": search, "catalogue": catalogue,
                             "approximate": approximate, "report": report}, keywords)
    _check(options)
    if options.search.device is None and _engine_key(options.search.engine) == "torch":
        # The device of the input tensors is the torch engine's default device.
        options = replace(options, search=replace(options.search, device=_tensor_device(embeddings)))
    dataset = validate(submission, manifest=manifest, embeddings=embeddings, domains=domains,
                       product_ids=product_ids, item_ids=item_ids, group_ids=group_ids,
                       metric=options.protocol.metric,
                       resident=submission is None and _resident(embeddings, options.search.engine,
                                                                 options.search.device))
    loaded = time.perf_counter()
    submission_info, manifest_info = input_record(submission, manifest, dataset)
    return evaluate_dataset(dataset, **_as_objects(options), submission_info=submission_info,
                            manifest_info=manifest_info, load_seconds=loaded - started, started=started)


def _resident(embeddings: Any, engine: Any, device: str | None = None) -> bool:
    """Whether ``embeddings`` stays on its device: a CUDA tensor searched by the torch engine on a
    device of the same kind (docs/screening.md, "CUDA tensors"; ``device``: the one asked for,
    else the engine object's). Torch is imported only for a tensor."""
    if type(embeddings).__module__.split(".")[0] != "torch" or _engine_name(engine) != "torch":
        return False
    from ropebench.engines.torch.resident import applies

    wanted = device if device is not None else getattr(engine, "device", None)
    return applies(embeddings, wanted)


def _engine_name(engine: Any) -> str | None:
    """The registered name an ``engine`` option resolves to, or an engine object's own name."""
    return _engine_key(engine) if engine is None or isinstance(engine, str) else getattr(engine, "name", None)


def _engine_key(engine: Any) -> str | None:
    """The registered name an ``engine`` option resolves to (None for an engine object)."""
    return resolve(engine).engine if engine is None or isinstance(engine, str) else None


def _tensor_device(embeddings: Any) -> str | None:
    """``cuda:N`` or ``mps`` when ``embeddings`` is a tensor there (duck-typed: torch is not imported)."""
    device = getattr(embeddings, "device", None)
    kind = getattr(device, "type", None)
    if kind not in ("cuda", "mps"):
        return None
    index = getattr(device, "index", None)
    return kind if index is None else f"{kind}:{index}"


def _search_precision(screen: str | None) -> Any:
    from ropebench.engines.core.precision import FP32, by_name

    return FP32 if screen is None else by_name(screen)


def _as_objects(options: Options) -> dict[str, Any]:
    return {"protocol": options.protocol, "search": options.search, "catalogue": options.catalogue,
            "approximate": options.approximate, "report": options.report}


def _check(options: Options) -> None:
    """Every option checked before any file is read (a bad option fails fast)."""
    p, s, c, x, r = options.protocol, options.search, options.catalogue, options.approximate, options.report
    parse_ks(p.ks)
    parse_tasks(p.tasks)
    _check_options(p.ties, s.threads)
    if "all_relevant" in counts_needed(parse_measures(p.measures)) and (c.distractors or x.index is not None):
        raise UsageError("--measures MAP@R, RP and mAP@K are computed on the test set alone for now: not with "
                         "--distractors or --index. Fix: drop those measures for this run, or the catalogue/index")
    if p.metric not in METRICS:
        raise UsageError(f"unknown metric {p.metric!r}: choose from {', '.join(METRICS)}")
    if r.by not in (None, "category"):
        raise UsageError(f"--by {r.by!r}: the only grouping is 'category'")
    runner = _runner_name(options)
    if c.distractor_sizes is not None and not c.distractors:
        raise UsageError("--distractor-sizes needs --distractors. Fix: add the catalogue, or drop the sizes")
    if runner == "dask" and not c.distractors and _engine_name(s.engine) == "torch":
        raise UsageError("--scheduler and --workers run a distractor catalogue's shards on a Dask cluster; there is "
                         "no catalogue to run. Fix: add --distractors, or drop them")
    if runner == "dask" and not c.distractors and c.runner is None:
        raise UsageError("--engine dask runs distractor shards on a cluster; there is no catalogue to run. Fix: add "
                         "--distractors, or use --engine one-pass")
    if runner != "dask" and (c.scheduler is not None or c.workers is not None):
        raise UsageError("--scheduler and --workers go with --engine dask (or --engine torch with --distractors). "
                         "Fix: add --engine dask, or drop them")
    if (s.device is not None or s.screen is not None) and _engine_name(s.engine) != "torch":
        raise UsageError("--device and --screen go with --engine torch. Fix: add --engine torch, or drop them")
    if s.screen is not None and s.screen not in ("fp32", "bf16"):
        raise UsageError(f"--screen {s.screen!r}: choose from fp32, bf16")
    if x.index is not None and (runner == "dask" or c.runner is not None):
        raise UsageError("--index builds and searches its index in this process, not on a Dask cluster. Fix: drop "
                         + ("--scheduler/--workers" if _engine_name(s.engine) == "torch" else "--engine dask")
                         + ", or drop --index")
    if x.agreement_queries < 0:
        raise UsageError(f"--agreement-queries must be at least 0, got {x.agreement_queries}")
    parse_compression(p.compress)


def _runner_name(options: Options) -> str:
    """Where a catalogue's shards run: ``dask`` for ``--engine dask``, and for ``--engine torch``
    with ``--scheduler`` or ``--workers`` (its shards screened by torch on the workers); else in
    this process."""
    s, c = options.search, options.catalogue
    if _engine_name(s.engine) == "torch" and (c.scheduler is not None or c.workers is not None):
        return "dask"  # a registered name or a TorchEngine object alike
    if s.engine is not None and not isinstance(s.engine, str):
        return "in-process"
    return resolve(s.engine).runner


def _check_options(ties: str, threads: int | None) -> None:
    from ropebench.engines.core.precision import gradual_underflow

    if not gradual_underflow():
        # FTZ/DAZ flush subnormal products in the screens (no band's floor covers that) and in the
        # float64 settlement itself (then not the protocol's score): counts would change silently.
        raise UsageError("this thread flushes subnormal numbers to zero (FTZ/DAZ, e.g. after "
                         "torch.set_flush_denormal(True)), so scores below 2^-126 would be miscounted. Fix: call "
                         "torch.set_flush_denormal(False) before evaluating")
    if ties not in TIE_POLICIES:
        raise UsageError(f"unknown tie policy {ties!r}: choose from {', '.join(TIE_POLICIES)}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    limit = 4 * (os.cpu_count() or 1)
    if threads is not None and threads > limit:  # each worker holds a 16 MiB tile and a thread stack
        raise UsageError(f"--threads {threads}: more than 4 per core ({os.cpu_count()} cores here) only adds memory "
                         f"and switching. Fix: use --threads {os.cpu_count() or 1} (the default: every core)")


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
    protocol: ProtocolOptions | None = None,
    search: SearchOptions | None = None,
    catalogue: CatalogueOptions | None = None,
    approximate: ApproximateOptions | None = None,
    report: ReportOptions | None = None,
    submission_info: Mapping[str, Any] | None = None,
    manifest_info: Mapping[str, Any] | None = None,
    load_seconds: float = 0.0,
    started: float | None = None,
    **keywords: Any,
) -> EvaluationResult:
    """Score a validated dataset; see :func:`evaluate` for the options.

    The engine is chosen and composed here (a catalogue composition around it with distractors,
    an approximate composition with ``index``), searched once through the one contract
    (:class:`~ropebench.engines.SearchRequest` → :class:`~ropebench.engines.SearchRun`), and the
    result is built once from what the search returned. The dataset's embedding matrix is split
    into prepared per-domain copies and then no longer referenced here, so a caller that drops
    its own reference gets the memory back.
    """
    from ropebench.engines.exact import l2_center

    started = time.perf_counter() if started is None else started
    options = group_options({"protocol": protocol, "search": search, "catalogue": catalogue,
                             "approximate": approximate, "report": report}, keywords)
    _check(options)
    p, cat, rep = options.protocol, options.catalogue, options.report
    metric, ks, task_list = p.metric, parse_ks(p.ks), parse_tasks(p.tasks)
    families = parse_measures(p.measures)
    needs = counts_needed(families)
    if rep.by == "category" and dataset.categories is None:
        raise UsageError("--by category needs a manifest with a 'category' column. Fix: add the column "
                         "to the manifest, or drop --by")
    if dataset.embeddings is None and dataset.resident is None:
        raise UsageError("the dataset has no embeddings (it was made by without_embeddings())")
    if submission_info is None:
        submission_info, manifest_info = _array_record(dataset), None
    compression = parse_compression(p.compress)
    # A tensor's matrix kept on its device: what it copies to the host is counted here.
    device_counters = None if dataset.resident is None else dataset.resident.counters
    if dataset.resident is not None and (compression is not None or p.fewshot or cat.distractors
                                 or options.approximate.index is not None
                                 or _engine_name(options.search.engine) != "torch"):
        from ropebench.engines.torch.resident import with_host_matrix

        dataset = with_host_matrix(dataset)  # these compositions read the whole matrix on the host
    raw_dim = dataset.dim  # a catalogue is submitted at the test set's own d, then compressed alike
    if compression is not None:  # the compressed vectors are what gets scored, as a submission of them would be
        dataset = compress_dataset(dataset, compression, metric=metric)
    on_device = dataset.resident
    center = None
    if metric == "l2" and on_device is not None:
        center = on_device.l2_center()
    elif metric == "l2":
        assert dataset.embeddings is not None
        center = l2_center(dataset.embeddings)
    threads = options.search.threads
    engine_choice = options.search.engine
    choice = resolve(engine_choice) if engine_choice is None or isinstance(engine_choice, str) else None
    search_options = options.search
    engine_options = {"device": search_options.device, "screen": search_options.screen} \
        if choice is not None and choice.engine == "torch" else {}
    base = get_engine(engine_choice if choice is None else choice.engine, **engine_options)
    runner, owned = cat.runner, False
    if cat.distractors and runner is None:
        owned = True
        libraries = ("torch",) if base.name == "torch" else ()  # screened on the workers: the same torch there
        runner = get_runner("dask", scheduler=cat.scheduler, workers=cat.workers, require=libraries) \
            if _runner_name(options) == "dask" else get_runner("in-process", threads=threads or os.cpu_count() or 1)
    try:
        layout = _compose(dataset, base, runner, options, center, raw_dim, compression)
        checked = time.perf_counter()
        embeddings, dataset = dataset.embeddings, dataset.without_embeddings()
        bar = Progress(enabled=options.search.progress)
        search_started = time.perf_counter()
        with thread_limit(threads) as thread_count:
            members = {code: dataset.members(code) for code in DOMAINS}
            needed = [code for code in DOMAINS if p.fewshot or any(code in split_task(task) for task in task_list)]
            if on_device is not None:  # prepared on the device; the core's host copies counted
                prepared = on_device.prepare_domains(members, needed, metric, center)
                vectors = {code: Vectors(*parts) for code, parts in prepared.items()}
                on_device = None  # the matrix itself is no longer needed: its device memory can go
            else:
                assert embeddings is not None
                vectors = prepare_domains(embeddings, members, needed, metric, center)
            del embeddings
            request = SearchRequest(
                task_data=build_task_data(dataset, members, vectors, task_list, metric, center), tasks=task_list,
                max_k=max(ks), exact_censored=False, threads=thread_count, symmetric_scores=metric != "l2",
                precision=_search_precision(search_options.screen),
                on_start=lambda total, unit: bar.start("search", total, unit=unit), on_progress=bar.advance,
                counts=needs, depth_k=map_depth(families))
            # With the one-pass engine the few-shot screen's cross-domain blocks are the retrieval
            # tasks' own: read once for both (SharedCross); the rest of the request is searched below.
            share = getattr(layout.engine, "shared_cross", None) if p.fewshot and layout.engine is base else None
            shared = share(request) if share is not None else None
            fewshot = _fewshot(dataset, members, vectors, base, p, metric, center, thread_count, shared) \
                if p.fewshot else None
            del vectors
            read = shared.run() if shared is not None and fewshot is not None and fewshot[2].engine.get(
                "fewshot_screen") and shared.tasks else None
            if read is not None:
                request = replace(request, tasks=tuple(task for task in task_list if task not in read.hits))
            run = layout.engine.search(request)
            if read is not None:
                run = _with_read(run, read, task_list)
            if request.all_relevant:
                from ropebench.engines.core import fill_levels

                missing = [task for task in task_list if task not in run.levels]
                if missing:  # an engine without its own all-relevant path: the simple whole-row one
                    run = replace(run, levels=fill_levels(request.task_data, task_list, run.levels,
                                                          request.depth_k))
            del request
            bar.finish()
            if device_counters is not None:  # what reached the host from the device, counted
                run = replace(run, counters={**run.counters, **device_counters})
    finally:
        if owned and runner is not None:
            runner.close()
    searched = time.perf_counter()
    return _build_result(dataset, members, run, layout, options, task_list, ks, thread_count,
                         submission_info, manifest_info,
                         timing={"load_s": load_seconds + (checked - started if layout.catalogue else 0.0),
                                 "search_started": search_started, "searched": searched, "started": started,
                                 "check_s": checked - started}, fewshot=fewshot)


def _with_read(run: SearchRun, read: SearchRun, tasks: Sequence[str]) -> SearchRun:
    """The search's run with the tasks read from the few-shot screen's blocks (``read``) added: their
    counts, and their counters summed with the search's."""
    hits = {**run.hits, **read.hits}
    counters = {name: run.counters.get(name, 0) + read.counters.get(name, 0)
                for name in dict.fromkeys([*run.counters, *read.counters])}
    return replace(run, hits={task: hits[task] for task in tasks}, counters=counters)


def _fewshot(dataset: Dataset, members: Mapping[str, np.ndarray], vectors: Any, engine: Engine,
             p: ProtocolOptions, metric: str, center: np.ndarray | None, threads: int,
             shared: Any = None) -> tuple[Any, ...]:
    """The few-shot tasks (docs/fewshot.md), first-hit counts up to K = 5: through the linear screen
    (:mod:`ropebench.engines.fewshot_screen`) where the engine offers it (the default one-pass
    engine, cosine/ip), else through the test set's engine in one request, every (direction, shots, draw) task
    (the per-task path: the reference the linear screen is tested against)."""
    from ropebench.fewshot import FewshotSpec, fewshot_tasks, parse_shots

    spec = FewshotSpec(parse_shots(p.shots), int(p.draws), int(p.fewshot_seed))
    names = fewshot_tasks(spec)
    started = time.perf_counter()
    task_data = build_task_data(dataset, members, vectors, names, metric, center, threads)
    run = _linear_fewshot(dataset, members, spec, engine, task_data, threads, shared)
    if run is None:
        request = SearchRequest(task_data=task_data, tasks=tuple(names), max_k=5, threads=threads,
                                symmetric_scores=metric != "l2")
        run = engine.search(request)  # recorded as the per-task screen (no fewshot_screen key)
    return spec, task_data, run, time.perf_counter() - started


def _linear_fewshot(dataset: Dataset, members: Mapping[str, np.ndarray], spec: Any, engine: Engine,
                    task_data: Mapping[str, Any], threads: int, shared: Any = None) -> SearchRun | None:
    """The engine's own few-shot search (``engine.fewshot_search``: the one-pass engine's linear
    screen), or None where the engine has none or it does not apply (e.g. l2). ``shared``: the
    retrieval tasks reading its blocks too (:class:`~ropebench.engines.onepass.SharedCross`)."""
    from ropebench.fewshot import support_columns

    own = getattr(engine, "fewshot_search", None)
    if own is None:
        return None
    extra = {} if shared is None else {"shared": shared}
    return own(task_data, support_columns(dataset, members, spec), max_k=5, threads=threads, **extra)


def _fewshot_result(dataset: Dataset, members: Mapping[str, np.ndarray], fewshot: tuple[Any, ...],
                    options: Options, protocol: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    from ropebench.fewshot import fewshot_section

    spec, task_data, run, seconds = fewshot
    hits = {task: _beyond_max_k_censored(h, 5) for task, h in run.hits.items()}
    tasks, columns, scored = fewshot_section(spec, task_data, hits, options.protocol.ties)
    table = query_table.fewshot_rows(dataset, members, columns, scored)
    if options.report.ci and len(table["task"]):
        from ropebench.stats import task_intervals

        found = task_intervals({key: value for key, value in table.items() if key != "rows"},
                               resamples=10_000, seed=0)
        for name, cells in found.items():
            direction, shots = name.split("/")
            tasks[direction][shots]["ci"] = {m: (None if np.isnan(lo) else [float(lo), float(hi)])
                                             for m, (lo, hi) in cells.items() if m == "acc"}
    section = {"protocol": spec.to_json(), "tasks": tasks, "search_s": round(seconds, 4),
               "screen": run.engine.get("fewshot_screen", "per-task"), "counters": dict(run.counters)}
    return section, query_table.fewshot_table_builder(dataset, table, protocol, spec.to_json())


@dataclass(frozen=True)
class _Layout:
    """The composed engine, what the catalogue brought (sizes, its record), and the compression
    applied to the test set and to every shard alike."""

    engine: Engine
    catalogue: Any = None
    info: Any = None
    sizes: tuple[int, ...] = (0,)
    compression: Any = None


def _compose(dataset: Dataset, base: Engine, runner: Any, options: Options, center: np.ndarray | None,
             raw_dim: int | None = None, compression: Any = None) -> _Layout:
    """The engine of this evaluation: ``base``, wrapped by a catalogue composition when there are
    distractors and by an approximate composition when an index is asked for."""
    cat, approx, metric = options.catalogue, options.approximate, options.protocol.metric
    progress = options.search.progress
    engine: Engine = base
    catalogue = info = exact = None
    sizes: tuple[int, ...] = (0,)
    if cat.distractors:
        from ropebench.io.catalogue import prepare_catalogue, scan_task

        catalogue, info, sizes = prepare_catalogue(list(cat.distractors), dataset, metric=metric, center=center,
                                                   runner=runner, sizes=cat.distractor_sizes,
                                                   shard_rows=cat.shard_rows, progress=progress,
                                                   compression=compression, dim=raw_dim)
        exact = get_composition("catalogue", base, catalogue.shards, scan_task, runner, boundaries=sizes,
                                max_norm=info.max_norm, integers=info.integers, metric=metric, center=center,
                                progress=progress, compression=compression)
        engine = exact
    if approx.index is not None:
        if len(sizes) > 1:
            raise UsageError("--index evaluates one catalogue size. Fix: give one --distractor-sizes value")
        rows = None
        if catalogue is not None:
            from ropebench.io.distractors import read_shard

            shards, limit = catalogue.shards, sizes[-1]
            rows = (lambda: (read_shard(shard) for shard in shards if shard.start < limit))
        engine = get_composition("approximate", approx.index, nprobe=approx.nprobe, ef_search=approx.ef_search,
                                 agreement_queries=approx.agreement_queries, seed=approx.seed, rows=rows,
                                 limit=sizes[-1], exact=exact, progress=progress, metric=metric, center=center,
                                 ks=parse_ks(options.protocol.ks), ties=options.protocol.ties,
                                 catalogue_items=None if info is None else info.n_items,
                                 columns=_first_hit_columns(parse_ks(options.protocol.ks), options.protocol.ties),
                                 compression=compression)
    return _Layout(engine, catalogue, info, sizes, compression)


def _first_hit_columns(ks: Sequence[int], ties: str) -> Any:
    """Per-query first-hit measures from ``a, t, p`` (the approximate composition's agreement)."""
    return lambda a, t, p: measure_columns(a, t, p, ks, ties)


def _build_result(dataset: Dataset, members: Mapping[str, np.ndarray], run: SearchRun, layout: _Layout,
                  options: Options, task_list: Sequence[str], ks: Sequence[int], thread_count: int,
                  submission_info: Mapping[str, Any], manifest_info: Mapping[str, Any] | None,
                  timing: Mapping[str, float], fewshot: tuple[Any, ...] | None = None) -> EvaluationResult:
    """The result, built once from the search's run (and the few-shot search's, when asked)."""
    from ropebench._version import __version__
    from ropebench.provenance import environment, utc_now

    metric, ties, rep = options.protocol.metric, options.protocol.ties, options.report
    families = parse_measures(options.protocol.measures)
    names = measure_names(ks, families)
    max_k = max(ks)
    hits_by_task = {task: _beyond_max_k_censored(run.hits[task], max_k) for task in task_list}
    # Row j of items_per_size / by_size is the catalogue prefix through the j-th positive size.
    positive = [size for size in layout.sizes if size > 0]
    rows = [0 if size == 0 else positive.index(size) + 1 for size in layout.sizes]
    items = run.items_per_size
    last = items[rows[-1]] if layout.catalogue is not None and items is not None and len(items) > rows[-1] \
        else np.zeros(len(DOMAINS), dtype=np.int64)
    results: dict[str, TaskResult] = {}
    columns: dict[str, dict[str, np.ndarray]] = {}
    for task in task_list:
        hits = hits_by_task[task]
        gallery_domain = split_task(task)[1]
        columns[task] = measure_columns(hits.a, hits.t, hits.p, ks, ties, names=names,
                                        levels=run.levels.get(task))
        results[task] = TaskResult(
            task=task,
            n_queries=int(hits.scored.sum()),
            n_skipped=int((~hits.scored).sum()),
            n_gallery=int(len(members[gallery_domain])) + int(last[DOMAINS.index(gallery_domain)]),
            n_tied=count_tied(hits.a, hits.t, ks),
            measures=summarize(hits.a, hits.t, hits.p, ks, ties, columns[task], names=names),
        )
    extra: dict[str, Any] = {}
    ci_started = time.perf_counter()
    if rep.ci and task_list:
        intervals = query_table.task_intervals_of(dataset, members, task_list, hits_by_task, columns)
        results = {task: replace(result, ci=intervals.get(task)) for task, result in results.items()}
    if rep.by == "category":
        extra["by_category"] = query_table.by_category(dataset, members, task_list, hits_by_task, columns)
        missing = query_table.uncategorised(dataset, members, task_list, hits_by_task, columns)
        if missing:  # null categories: never merged with a category named "None"
            extra["by_category_missing"] = missing
    if layout.catalogue is not None and layout.info is not None:
        from ropebench.io.distractor_checks import catalogue_record

        extra["distractors"] = {**catalogue_record(layout.catalogue, layout.info), "sizes": list(layout.sizes),
                                "n_items": {code: int(last[i]) for i, code in enumerate(DOMAINS)},
                                "catalogue_rows": layout.catalogue.n_rows, "shards": len(layout.catalogue.shards)}
        if len(layout.sizes) > 1 and run.by_size and items is not None:
            extra["distractor_curve"] = _curve(dataset, run, rows, items, layout.sizes, task_list, ks, ties)
    if run.agreement is not None:
        extra["agreement"] = dict(run.agreement)
    finished = time.perf_counter()
    protocol = {"metric": metric, "ties": ties, "ks": list(ks), "search": "exact", "scores": "float64",
                "group_exclusion": dataset.group_codes is not None, **run.protocol}
    if families != DEFAULT_MEASURES:  # recorded only when chosen: results of the default stay as they were
        protocol["measures"] = list(families)
    if layout.compression is not None:
        protocol.update(compression_protocol(layout.compression, int(submission_info["dim"])))
    fewshot_rows = None
    if fewshot is not None:  # its section and rows carry the final protocol, so they come after it
        extra["fewshot"], fewshot_rows = _fewshot_result(dataset, members, fewshot, options, protocol)
    env = environment(thread_count, faiss_ran=run.counters.get("faiss_searches", 0) > 0)
    env["engine"] = {"name": run.engine.get("name", ""), "counters": dict(run.counters),
                     **{key: value for key, value in run.engine.items() if key != "name"}}
    times = {"load_s": round(timing["load_s"], 4),
             "search_s": round(timing["searched"] - timing["search_started"], 4),
             **({"ci_s": round(finished - ci_started, 4)} if rep.ci else {}),
             "total_s": round(finished - timing["started"], 4)}
    if layout.catalogue is not None:
        times["distractors_check_s"] = round(timing["check_s"], 4)
    times.update(run.timing)
    return EvaluationResult(
        ropebench_version=__version__,
        created=utc_now(),
        protocol=protocol,
        submission=dict(submission_info),
        manifest=None if manifest_info is None else dict(manifest_info),
        environment=env,
        timing=times,
        tasks=results,
        extra=extra,
        _per_query=query_table.per_query_builder(dataset, members, task_list, hits_by_task, columns, protocol),
        _fewshot_per_query=fewshot_rows,
    )


def _curve(dataset: Dataset, run: SearchRun, rows: Sequence[int], items: np.ndarray, sizes: Sequence[int],
           tasks: Sequence[str], ks: Sequence[int], ties: str) -> dict[str, Any]:
    """``distractor_curve``: every measure, gallery size and tie count at every catalogue size."""
    test_counts = dataset.domain_counts()
    curve: dict[str, Any] = {"sizes": list(sizes), "tasks": {}, "n_gallery": {}, "n_tied": {}}
    for task in tasks:
        by_size = [_beyond_max_k_censored(run.by_size[row][task], max(ks)) for row in rows]
        values = [summarize(h.a, h.t, h.p, ks, ties) for h in by_size]
        names = list(values[0]) if values else []
        curve["tasks"][task] = {name: [v[name] for v in values] for name in names}
        gallery = split_task(task)[1]
        column = DOMAINS.index(gallery)
        curve["n_gallery"][task] = [test_counts[gallery] + int(items[row][column]) for row in rows]
        curve["n_tied"][task] = [count_tied(h.a, h.t, ks) for h in by_size]
    return curve


def _beyond_max_k_censored(hits: FirstHits, max_k: int) -> FirstHits:
    """Every query with at least max K items above its first hit, recorded one way.

    Such a query misses at every K whatever its exact counts, and whether an engine stopped
    counting it (censored) or counted it fully depends on the order it met the gallery in
    (tiles, FAISS's list among tied scores). Recording all of them as ``a = max K, t = 0, p = 1,
    censored`` makes the per-query table independent of row order and thread count; no measure
    changes (R@K = 0 and a reciprocal rank of 0 at every reported K, no tie).
    """
    from ropebench.engines.core import censor

    a, t, p, censored = censor(hits.a, hits.t, hits.p, hits.censored, max_k)
    return replace(hits, a=a, t=t, p=p, censored=censored)


def _array_record(dataset: Dataset) -> dict[str, Any]:
    from ropebench.io.inputs import input_record

    return input_record(None, None, dataset)[0]
