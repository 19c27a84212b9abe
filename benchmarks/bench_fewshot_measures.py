"""Cost of --measures MAP@R,RP and --fewshot at ROPE-test size (python benchmarks/bench_fewshot_measures.py
[--scale 1.0] [--threads 2] [--skip-measures | --measures-only [--repeat N]] [--skip-per-task]).
Prints seconds; reports numbers, never pass/fail.

Targets: adding MAP@R,RP costs at most 1.5x the default evaluation; 1- and 5-shot with 10 draws
take no longer than the nine retrieval tasks.

In one process: the nine retrieval tasks (R@K, MRR), then with MAP@R,RP, then few-shot through the
linear screen (one item-score block per domain pair, prototype scores combined from it) — with the
compiled kernels where numba is installed (the ``fast`` extra; compiled or loaded from their disk
cache by a small warm-up run before anything is timed, its seconds printed: the tile selection's
kernel too), and with numpy unless --skip-numpy — and,
unless --skip-per-task, through the per-task path (every draw its own GEMM; forced by switching the
linear screen off), checking that all give the same numbers. Per row: wall and CPU seconds, the
search's seconds, pairs settled in float64 and the peak RSS so far; for few-shot its own search
seconds (with the one-pass engine it includes reading the retrieval tasks' cross-domain blocks
from its tiles: they are computed once for both) and what few-shot adds to the evaluation's search,
against the nine retrieval tasks alone. Measured figures, with the machine and load, are in
docs/fewshot.md ("Cost").
"""

from __future__ import annotations

import argparse
import resource
import time

from rope_size import generate

import ropebench
import ropebench.evaluation
from ropebench.engines import fewshot_screen, kernels


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_up() -> None:
    """Import numba and compile the kernels or load them from their cache (about 0.5 s, 8 s on first
    use), so that no timed run pays it: a small evaluation with the few-shot kernels and the compiled
    tile selection forced on (below their size thresholds they would not run)."""
    from ropebench.engines.onepass import OnePassEngine, OnePassSettings

    started = time.perf_counter()
    small = generate(scale=0.02)
    settings = fewshot_screen.LinearSettings
    fewshot_screen.LinearSettings = lambda: settings(fused=True)  # type: ignore
    try:
        ropebench.evaluate(embeddings=small[0], domains=small[1], product_ids=small[2], ci=False, fewshot=True,
                           shots="1,5", draws=1, measures="R@K,MRR,MAP@R,RP",
                           engine=OnePassEngine(OnePassSettings(small_block=0, compiled=True)))
    finally:
        fewshot_screen.LinearSettings = settings
    print(f"kernels compiled or loaded from their cache (warm-up run) in {time.perf_counter() - started:.1f} s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", default="one-pass")
    parser.add_argument("--skip-measures", action="store_true", help="leave out the MAP@R,RP run")
    parser.add_argument("--measures-only", action="store_true",
                        help="only the first two rows (default, then MAP@R,RP), no few-shot")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --measures-only: the two rows this many times, alternating")
    parser.add_argument("--skip-per-task", action="store_true", help="leave out the per-task few-shot run")
    parser.add_argument("--skip-numpy", action="store_true",
                        help="leave out the linear screen's numpy run (when the kernels run)")
    args = parser.parse_args()
    emb, domains, products = generate(scale=args.scale)
    common = dict(embeddings=emb, domains=domains, product_ids=products, threads=args.threads, ci=False,
                  engine=args.engine)
    runs = [("default R@K,MRR", {}, "")]
    if not args.skip_measures:
        runs.append(("R@K,MRR,MAP@R,RP", {"measures": "R@K,MRR,MAP@R,RP"}, ""))
    if args.measures_only:
        runs = runs * max(1, args.repeat)
    else:
        compiled = kernels.available()
        if compiled:
            runs.append(("default + fewshot 1,5 x10", {"fewshot": True}, "kernels"))
        if not compiled or not args.skip_numpy:
            runs.append(("   ... fewshot, numpy" if compiled else "default + fewshot 1,5 x10", {"fewshot": True},
                         "numpy"))
        if not args.skip_per_task:
            runs.append(("   ... fewshot per task", {"fewshot": True}, "per-task"))
    if kernels.available():
        _warm_up()
    found: dict[str, object] = {}
    base_cpu = base_search = None
    settings = fewshot_screen.LinearSettings
    for label, options, path in runs:
        switch = ropebench.evaluation._linear_fewshot
        if path == "per-task":  # what main ran before the linear screen
            ropebench.evaluation._linear_fewshot = lambda *args, **kwargs: None
        fewshot_screen.LinearSettings = lambda fused=path == "kernels": settings(fused=fused)  # type: ignore
        try:
            started, cpu_started = time.perf_counter(), time.process_time()
            result = ropebench.evaluate(**common, **options)
            total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        finally:
            ropebench.evaluation._linear_fewshot = switch
            fewshot_screen.LinearSettings = settings
        extra = ""
        if base_cpu is None and not options:
            base_cpu, base_search = cpu, result.timing["search_s"]
        if result.fewshot is not None:
            section = result.fewshot
            found[path] = section["tasks"]
            # CPU seconds are steadier than wall seconds on shared cores; few-shot's own is the
            # difference with the default run (the same retrieval work).
            cpu_extra = f", cpu {cpu - base_cpu:.1f} s" if base_cpu is not None else ""
            counters = section["counters"]
            bulk = (f", pairs counted in bulk {counters['prototype_pairs_bulk']:,} / decided one by one "
                    f"{counters['prototype_pairs_decided']:,}, scores formed "
                    f"{counters['prototype_scores_formed']:,}") if "prototype_pairs_bulk" in counters else ""
            # What few-shot adds to the evaluation's search (its own part, and with the one-pass
            # engine the retrieval tasks' cross blocks read from its tiles instead of computed again).
            ratio = (f"; few-shot adds {result.timing['search_s'] - base_search:.1f} s = "
                     f"{(result.timing['search_s'] - base_search) / base_search:.2f}x the nine retrieval tasks"
                     ) if base_search else ""
            extra = (f"; fewshot search {section['search_s']:.1f} s{cpu_extra} ({section['screen']}, pairs "
                     f"settled {counters['pairs_settled']:,}, relevant settled "
                     f"{counters['relevant_settled']:,}{bulk}){ratio}")
        print(f"{label:28s} total {total:7.1f} s (cpu {cpu:.1f} s), search {result.timing['search_s']:7.1f} s"
              f"{extra}; peak RSS so far {_peak_mib():,.0f} MiB", flush=True)
        if "MAP@R" in result.tasks["P2V"].measures:
            cells = result.tasks["P2V"]
            print(f"   P2V MAP@R {cells['MAP@R']:.2f} RP {cells['RP']:.2f} R@1 {cells['R@1']:.2f}", flush=True)
    if len(found) > 1:
        first = next(iter(found.values()))
        print(f"few-shot numbers identical on the {len(found)} paths ({', '.join(found)}):",
              all(tasks == first for tasks in found.values()), flush=True)


if __name__ == "__main__":
    main()
