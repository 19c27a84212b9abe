"""``ropebench evaluate`` and ``ropebench validate``."""

from __future__ import annotations

import click

from ropebench.cli.common import (
    ks_option,
    metric_option,
    progress_wanted,
    quiet_option,
    tasks_option,
    threads_option,
    ties_option,
)
from ropebench.errors import UsageError

__all__ = ["evaluate", "validate", "MAX_KS"]

MAX_KS = 100


@click.command()
@click.argument("submission", type=click.Path(dir_okay=True))
@click.option("--manifest", "-m", type=click.Path(dir_okay=True), help="Ground-truth parquet (item_id, domain, "
              "product_id[, group_id, category]). Without it the submission must carry domain and product_id.")
@metric_option
@ties_option
@ks_option
@tasks_option
@click.option("--engine", default="one-pass", show_default=True,
              help="Search engine: one-pass (each similarity block once), faiss (one FAISS search per task), "
                   "torch (one-pass on a torch device, extra ropebench[torch]) or dask (the --distractors "
                   "shards on a Dask cluster).")
@click.option("--device", default=None, metavar="cpu|cuda|cuda:N|mps",
              help="--engine torch: the device [default: cuda when available, else cpu].")
@click.option("--screen", type=click.Choice(["fp32", "bf16"]), default=None,
              help="--engine torch: screening precision; the band is settled in float64, so the numbers are "
                   "the same [default: measured once, bf16 where clearly faster].")
@click.option("--distractors", multiple=True, type=click.Path(dir_okay=True),
              help="Distractor catalogue: parquet files or directories (item_id, domain, embedding), repeatable. "
                   "They join every task's gallery of their domain; streamed shard by shard.")
@click.option("--distractor-sizes", default=None,
              help="Nested catalogue sizes reported in one pass, e.g. 0,100000,1e6,all [default: all].")
@click.option("--scheduler", default=None,
              help="--engine dask (or torch with --distractors): a running scheduler, e.g. tcp://HOST:8786.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="--engine dask (or torch with --distractors): a local cluster of N worker processes on "
                   "127.0.0.1 [default: 2].")
@click.option("--index", default=None,
              help="Approximate search with this faiss.index_factory string (IVF4096,Flat, HNSW32, IVF4096,PQ32); "
                   "the result is marked approximate and reports its agreement with exact search.")
@click.option("--nprobe", type=click.IntRange(min=1), default=None, help="--index: IVF lists probed per query.")
@click.option("--ef-search", type=click.IntRange(min=1), default=None, help="--index: HNSW efSearch.")
@click.option("--agreement-queries", type=click.IntRange(min=0), default=2000, show_default=True,
              help="--index: seeded queries per task searched exactly too, for the agreement.")
@click.option("--compress", default=None, metavar="fp16|int8|binary|dims=K",
              help="Score the embeddings after this compression (recorded as protocol.compression, with "
                   "bytes_per_item): fp16, int8 (per vector), binary (sign bits) or dims=K (the first K).")
@click.option("--measures", default=None, metavar="R@K,MRR,MAP@R,RP,mAP@K",
              help="Measures to report [default: R@K,MRR, the paper's]: MAP@R and RP (R-Precision) look at "
                   "every relevant item; mAP@K with a number, e.g. mAP@100.")
@click.option("--fewshot", is_flag=True, default=False,
              help="Also run cross-domain few-shot classification (docs/fewshot.md): six directions, "
                   "prototypes of k support items per product, --draws seeded draws.")
@click.option("--shots", default="1,5", show_default=True, help="--fewshot: support items per product (k).")
@click.option("--draws", type=click.IntRange(min=1), default=10, show_default=True,
              help="--fewshot: support draws averaged over.")
@click.option("--seed", "fewshot_seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="--fewshot: seed of the support draws.")
@click.option("--out", "-o", type=click.Path(), help="Write the results JSON here.")
@click.option("--per-query", type=click.Path(),
              help="Where to write one parquet row per scored query and task (recorded in the results JSON, "
                   "with its sha256) [default with --out R.json: R.per_query.parquet beside it].")
@click.option("--no-per-query", is_flag=True,
              help="With --out: write only the results JSON, no per-query file (compare, plot --kind difficulty "
                   "and leaderboard significance need it).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="What to print on stdout.")
@click.option("--measure", default="R@1", show_default=True, help="Measure of the printed 3×3 matrix.")
@click.option("--ci", "ci", flag_value="pm", default=None,
              help="Show each number with its 95% product-level bootstrap interval as ± half-width.")
@click.option("--ci-bounds", "ci", flag_value="bounds", help="The same interval shown as [low, high].")
@click.option("--by", type=click.Choice(["category"]), default=None,
              help="Also report every task per manifest category (needs a 'category' column).")
@threads_option
@quiet_option
def evaluate(submission: str, manifest: str | None, metric: str, ties: str, ks: str, tasks: str | None,
             engine: str, device: str | None, screen: str | None, distractors: tuple[str, ...],
             distractor_sizes: str | None, scheduler: str | None,
             workers: int | None, index: str | None, nprobe: int | None, ef_search: int | None,
             agreement_queries: int, compress: str | None, measures: str | None, fewshot: bool, shots: str,
             draws: int, fewshot_seed: int, out: str | None, per_query: str | None, no_per_query: bool, fmt: str,
             measure: str, ci: str | None, by: str | None, threads: int | None, quiet: bool) -> None:
    """Score SUBMISSION (parquet file or per-domain directory) on the nine retrieval tasks.

    Exact nearest-neighbour search over every query-domain × gallery-domain pair; prints the
    3×3 R@1 matrix and R@K / MRR per task. With --out R.json the per-query rows go to
    R.per_query.parquet beside it (recorded in R.json; --no-per-query: none). Output paths are
    checked before any work; both files are written together at the end, or not at all.

    \b
    Example:
      ropebench evaluate sample_embeddings/cls_cd.parquet \\
          --manifest sample_embeddings/manifest.parquet --out results.json   # + results.per_query.parquet
      ropebench evaluate sub.parquet -m manifest.parquet --tasks cross --ties pessimistic --format json
      ropebench evaluate sub.parquet -m manifest.parquet --distractors catalogue/ --distractor-sizes 0,1e5,all
      ropebench evaluate sub.parquet -m manifest.parquet --compress int8 --out int8.json --per-query int8.parquet
      ropebench evaluate sub.parquet -m manifest.parquet --engine torch --screen bf16
      ropebench evaluate sub.parquet -m manifest.parquet --measures R@K,MRR,MAP@R,RP --fewshot --shots 1,5
    """
    import json
    import re

    import ropebench
    from ropebench.compress import parse_compression
    from ropebench.errors import DataError
    from ropebench.io.safety import check_output_paths
    from ropebench.protocol import check_measure, measure_names, parse_ks, parse_measures, parse_tasks
    from ropebench.render.console import render_evaluation

    check_measure(measure)
    if len(parse_ks(ks)) > MAX_KS:  # each K is a column of every per-query row and an interval per task
        raise UsageError(f"--ks: {len(parse_ks(ks)):,} cut-offs; at most {MAX_KS} are computed (each adds a column to "
                         "every per-query row and a bootstrap interval to every task: 3,000 Ks ran for minutes on "
                         "the 2,632-item sample). Fix: give the Ks you report, e.g. --ks 1,5,10,20,50")
    computed = measure_names(parse_ks(ks), parse_measures(measures))
    if measure not in computed and _defaulted("measure"):
        measure = computed[0]  # --ks without 1 and no --measure: show the smallest K's matrix
    elif measure not in computed:  # else the printed matrix would be all blanks
        raise UsageError(f"--measure {measure} is not computed with --ks {ks}: this run has {', '.join(computed)}. "
                         f"Fix: choose one of those, or add its K to --ks")
    parse_tasks(tasks)
    parse_compression(compress)
    if no_per_query and per_query is not None:
        raise UsageError("--per-query FILE and --no-per-query contradict each other. Fix: give one of them")
    if no_per_query and out is None:
        raise UsageError("--no-per-query only applies with --out (without --out nothing is written). Fix: drop it")
    per_query_label = "--per-query"
    if out is not None and per_query is None and not no_per_query:
        per_query = default_per_query_path(out)  # compare and plot need it: never make the user re-run
        per_query_label = "the per-query file written beside --out (--no-per-query: none)"
    _check_options(engine=engine, index=index, distractors=distractors, distractor_sizes=distractor_sizes,
                   scheduler=scheduler, workers=workers, fmt=fmt, fewshot=fewshot)
    inputs = {"submission": submission, "manifest": manifest,
              **{f"distractor catalogue #{number}": path for number, path in enumerate(distractors, start=1)}}
    check_output_paths({"--out": out, per_query_label: per_query}, inputs)
    try:
        result = ropebench.evaluate(submission, manifest=manifest, metric=metric, ties=ties, ks=ks, tasks=tasks,
                                    threads=threads, engine=engine, device=device, screen=screen,
                                    progress=progress_wanted(quiet), by=by,
                                    distractors=list(distractors) or None, distractor_sizes=distractor_sizes,
                                    scheduler=scheduler, workers=workers, index=index, nprobe=nprobe,
                                    ef_search=ef_search, agreement_queries=agreement_queries, compress=compress,
                                    measures=measures, fewshot=fewshot, shots=shots, draws=draws,
                                    fewshot_seed=fewshot_seed)
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "Number of training points" in str(error):
            found = re.search(r"Number of training points \((\d+)\).*clusters \((\d+)\)", str(error))
            counts = f" ({found[1]} training vectors, {found[2]} lists)" if found else ""
            raise DataError(f"--index {index}: the index needs at least as many training vectors as it has lists, "
                            f"and a gallery here has fewer{counts}. Fix: use fewer lists (e.g. IVF"
                            f"{max(1, int(found[1]) // 39) if found else 16},Flat: faiss wants about 39 vectors per "
                            "list) or a larger gallery; nothing was written") from None
        if isinstance(error, RuntimeError) and "can't start new thread" not in str(error):
            raise
        # Not a bug to show as a traceback: the data does not fit in what this process may use
        # (under an address-space limit, a thread's stack is memory too).
        raise DataError(f"submission {submission}: the evaluation ran out of memory. Fix: evaluate fewer tasks at "
                        "a time (--tasks), use fewer --threads, raise the memory limit (ulimit -v, container "
                        "memory) or use a machine with more memory; nothing was written") from None
    for note in _notes(result):
        if not quiet:
            click.echo(f"note: {note}", err=True)
    result = result.write(out, per_query=per_query)
    if not quiet:
        for path in (per_query, out):
            if path is not None:
                click.echo(f"wrote {path}", err=True)
    document = result.to_json()
    if fmt == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(render_evaluation(document, fmt, matrix_measure=measure, ci=ci), nl=False)


def default_per_query_path(out: str) -> str:
    """``r.json`` -> ``r.per_query.parquet`` beside it (``r`` -> ``r.per_query.parquet``)."""
    import os

    directory, name = os.path.split(out)
    stem = name[:-5] if name.lower().endswith(".json") else name
    return os.path.join(directory, f"{stem}.per_query.parquet")


def _check_options(*, engine: str, index: str | None, distractors: tuple[str, ...], distractor_sizes: str | None,
                   scheduler: str | None, workers: int | None, fmt: str = "text", fewshot: bool = False) -> None:
    """Option pairs and values that would be ignored, hang or exhaust the machine; before any work."""
    from ropebench.cli.options import check_distractor_sizes, check_scheduler, check_workers, refuse_without

    dask = engine == "dask"
    cluster = dask or (engine == "torch" and bool(distractors))  # torch screens the shards on the workers
    cluster_fix = "add --distractors CATALOGUE (the cluster runs its shards)" if engine == "torch" \
        else "add --engine dask"
    refuse_without([
        ("--nprobe", "nprobe", "--index", index is not None, "add --index (e.g. --index IVF256,Flat) or drop --nprobe"),
        ("--ef-search", "ef_search", "--index", index is not None,
         "add --index (e.g. --index HNSW32) or drop --ef-search"),
        ("--agreement-queries", "agreement_queries", "--index", index is not None,
         "add --index, or drop --agreement-queries (exact search agrees with itself)"),
        ("--distractor-sizes", "distractor_sizes", "--distractors", bool(distractors),
         "add --distractors CATALOGUE, or drop --distractor-sizes"),
        ("--scheduler", "scheduler", "--engine dask (or --engine torch with --distractors)", cluster,
         f"{cluster_fix}, or drop --scheduler"),
        ("--workers", "workers", "--engine dask (or --engine torch with --distractors)", cluster,
         f"{cluster_fix}, or drop --workers"),
        ("--measure", "measure", "--format text or markdown", fmt != "json",
         "drop --measure: the JSON holds every measure (it only chooses the printed matrix)"),
        ("--ci / --ci-bounds", "ci", "--format text or markdown", fmt != "json",
         "drop it: the JSON holds every task's interval under 'ci' (it only changes the printed table)"),
        ("--shots", "shots", "--fewshot", fewshot, "add --fewshot, or drop --shots"),
        ("--draws", "draws", "--fewshot", fewshot, "add --fewshot, or drop --draws"),
        ("--seed", "fewshot_seed", "--fewshot", fewshot, "add --fewshot, or drop --seed"),
    ])
    if scheduler is not None and workers is not None:
        raise UsageError("--scheduler and --workers: a running cluster (--scheduler) brings its own workers; "
                         "--workers sizes a local cluster. Fix: give one of them")
    check_distractor_sizes(distractor_sizes)
    check_workers(workers)
    check_scheduler(scheduler)
    if dask and not distractors:  # said before the data is read, not after
        raise UsageError("--engine dask runs distractor shards on a cluster; there is no catalogue to run. Fix: add "
                         "--distractors, or use --engine one-pass")


def _defaulted(name: str) -> bool:
    """True when the option ``name`` was not given (its default is in use)."""
    context = click.get_current_context(silent=True)
    source = context.get_parameter_source(name) if context is not None else None
    return source is None or source == click.core.ParameterSource.DEFAULT


def _notes(result: object) -> list[str]:
    """Things a user should know about the numbers (not errors)."""
    tasks = getattr(result, "tasks", {})
    ks = getattr(result, "ks", ())
    notes = []
    largest = max((task.n_gallery for task in tasks.values()), default=0)
    beyond = [k for k in ks if k > largest]
    if largest and beyond:
        notes.append(f"K = {', '.join(map(str, beyond))} exceeds the largest gallery ({largest} items): "
                     "R@K there is 100 for every scored query")
    empty = [name for name, task in tasks.items() if task.n_gallery == 0 or task.n_queries + task.n_skipped == 0]
    if empty:
        notes.append(f"{', '.join(empty)}: no query or no gallery item (a domain has no items), so no number "
                     "(shown as –); check that the submission or manifest covers every domain")
    return notes


@click.command()
@click.argument("submission", type=click.Path(dir_okay=True))
@click.option("--manifest", "-m", type=click.Path(dir_okay=True), help="Ground-truth parquet to check against.")
@metric_option
def validate(submission: str, manifest: str | None, metric: str) -> None:
    """Check SUBMISSION (and its manifest) without searching; report every problem at once.

    Exit 0 and a short summary when valid; exit 2 with the list of problems otherwise.

    \b
    Example:
      ropebench validate sample_embeddings/cls_cd.parquet --manifest sample_embeddings/manifest.parquet
    """
    import ropebench
    from ropebench.render.console import render_validation

    dataset = ropebench.validate(submission, manifest=manifest, metric=metric)
    click.echo(render_validation(dataset, submission, manifest), nl=False)
