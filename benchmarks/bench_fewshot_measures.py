"""Cost of --measures MAP@R,RP and --fewshot at ROPE-test size (python benchmarks/bench_fewshot_measures.py
[--scale 1.0] [--threads 2] [--skip-measures | --measures-only [--repeat N]]). Prints seconds; reports
numbers, never pass/fail.

Targets (issue 18): adding MAP@R,RP costs at most 1.5x the default evaluation; 1- and 5-shot with 10
draws take no longer than the nine retrieval tasks.

Few-shot is searched twice in the same run: through the linear screen (the default: one item-score
block per domain pair, prototype scores combined from it, docs/fewshot.md) and through the per-task
path (every draw its own GEMM; forced here by switching the linear screen off), with the pairs
settled in float64 and the process's peak RSS after each.

Measured (search seconds, --threads 2 on 2 cores shared with other work, one run each; before = main
aaca8c7, after = the floors / few-shot changes of issue-18-speed; /work/notes/issue-18-speed.md):

    scale 1.0 (ROPE test size)   before   after
    default R@K,MRR               10.8     11.9
    + MAP@R,RP                    87.9     24.1   (8.1x -> 2.0x the default; target 1.5x: missed)
    few-shot 1,5 x10 search_s     26.6     27.9   (~3x the retrieval tasks; target: missed)
    scale 0.25: MAP@R,RP 17.1 -> 2.4 s, few-shot 5.3 -> 2.4 s.

Then (branch maprs-speed: relevant levels by band, level candidates decided in batches, floors from
one tile, the tile selection below its outliers), before = main 9d8062c, one run each in one session
on a quiet moment of the same shared box:

    scale 1.0             --threads 2          --threads 1
                          before   after       before   after
    default R@K,MRR         5.3      5.3         9.9     10.2
    + MAP@R,RP             12.4      9.1        22.4     16.2
    ratio                   2.3x     1.7x        2.3x     1.6x   (target 1.5x: missed)

    (min of 3 runs under load, same session: threads 2 2.2x -> 1.7x, threads 1 2.1x -> 1.6x.)

Then (branch maprs2: the relevant pairs screened per product unit by a stacked matmul, the tile
selection against the columns' min(cut, cut-off), a candidate's level guessed by a binary search of
its padded row), before = main 0245e84, after = maprs2 d5e49fc, the first two rows only, two runs
each, alternating after/before, in one session on the shared 2 cores (search seconds):

    scale 1.0             --threads 2                --threads 1
                          before       after         before       after
    default R@K,MRR        5.8  6.1     6.1  6.3     10.5 11.3    11.6 10.7
    + MAP@R,RP            10.6 11.0    10.0 10.8     18.8 19.0    17.1 17.8
    ratio                  1.8x 1.8x    1.6x 1.7x    1.8x 1.7x    1.5x 1.7x   (target 1.5x: missed)

    The same main measured 1.6x / 1.7x in the earlier session: the ratio moves by ~0.1 with the
    load. One thread: MAP@R,RP about 1.4 s faster; two threads: about 0.4 s (they collect 10-12M
    level candidates against 8.8M on one thread, and the count varies from run to run).

Then (branch maprs3: level tiles in waves of diagonals, a block's level state dropped when its tiles
are done, dead levels dropped by steps), before = main cf67ab9, after = maprs3 39e549e, --measures-only,
three rounds alternating before/after in one session on the 2 shared cores (load average 2.0-4.2;
search seconds, the first two rows; CPU-second ratios of three more rounds at load 4-7 in brackets):

    scale 1.0             --threads 2                     --threads 1
                          before          after           before          after
    default R@K,MRR       11.2 12.8 12.0  11.2 11.5 11.3  10.4 10.5 10.4  10.5 11.0 10.7
    + MAP@R,RP            18.6 20.3 19.3  14.8 17.3 17.7  16.7 17.0 16.2  16.6 15.5 15.9
    ratio                 1.66 1.59 1.61  1.32 1.50 1.57  1.61 1.62 1.56  1.58 1.41 1.49
    (cpu ratios)         (1.52-1.65)     (1.36-1.47)     (1.50-1.60)     (1.41-1.53)
    peak RSS, MiB          771  797  868   682  703  679   704  704  705   368  369  368

    Two threads' peak RSS is mostly glibc's heap: with MALLOC_MMAP_THRESHOLD_=131072 the same run
    peaks at 466 MiB (MALLOC_ARENA_MAX=1: 510); the rest is the next block prepared meanwhile.

    Level candidates: 8.8M (one thread) and 10-12M (two) -> 6.6M on both (LevelCounter.collected,
    summed over the blocks). Two cores this loaded give two threads no speed-up.

Few-shot through the linear screen (branch fewshot-linear, --scale 1 --skip-measures, three runs on 2
cores shared with other work; search seconds, wall (CPU where printed)):

    run   nine retrieval tasks   few-shot linear   few-shot per task   pairs settled (linear / per task)
    A     11.3                   23.9              19.5                6,617 / 23,914
    B     24.2                   50.5              48.3                6,592 / 23,855
    C     23.3 (cpu 12.5)        29.8 (cpu 22.1)   52.1 (cpu 32.6)     6,607 / 23,007
    one thread, CPU seconds of the search alone: retrieval 10.5, linear 20.6, per task 28.6
    peak RSS: ~330 MiB after retrieval, ~740 MiB after the linear screen, ~880 MiB after the per-task path

Wall seconds on the shared cores vary by 2x between runs; CPU seconds say the linear screen does about
0.7x the per-task path's work and about 2x the nine retrieval tasks': the target is still missed.

Few-shot per task is bound by its GEMMs: 120 tasks x 30.7k queries x 2,527 prototypes x 128 = 2.2x the
flops of the nine retrieval tasks. The linear screen needs the GEMMs of three cross blocks (0.72 TFLOP;
5.0 s of its 20.6 s on one thread) but still forms and compares every (query, prototype) score once
(9.3G of them: 8.7 s), and settles the 3.7M thresholds in float64 as before (2.4 s).

Then (branch fewshot-prune: thresholds known by an interval and settled on demand, 3.7M -> ~10k;
scores surely above T counted in bulk, ~12.7M pairs, ~11k judged one by one), before = main
cf67ab9, after = fewshot-prune, alternating in one session, --scale 1 --skip-measures
--skip-per-task, load average 4-7 on the 2 shared cores (search seconds, ratio few-shot / nine
retrieval tasks):

                      --threads 2                       --threads 1
                      before         after              before         after
    retrieval          17.2 / 19.5    22.0 / 12.1        14.7 / 19.5    19.2 / 17.7
    few-shot           30.0 / 51.5    47.4 / 35.7        35.5 / 40.1    37.8 / 38.0
    ratio              1.75x / 2.64x  2.16x / 2.96x      2.42x / 2.06x  1.96x / 2.15x

The load moves the ratio more than the change. In one process on the same task data, alternating,
one thread, CPU seconds of the linear screen alone: before 22.65 / 21.38 / 22.65, after 20.0 / 20.8 /
22.2 (about 6% less); the first "after" run also ran the per-task path: numbers identical. Then
batches of 2^20 combined scores instead of 2^18: 20.4 / 21.0 against 20.5 / 22.3 (scale 0.5: 11%).
In a quieter moment (load 0.5-1.2), with those batches, one run each, alternating, search seconds
few-shot against retrieval: --threads 2 before 18.4 / 5.8 (3.16x), after 13.9 / 5.8 (2.39x);
--threads 1 before 26.1 / 11.1 (2.35x), after 22.4 / 10.9 (2.05x). Target (1.0x) still missed.

Also tried on that branch (commit e5b731a, reverted): skipping (query, product) pairs whose bound
shots * max w * (largest item score) + band is below the query's lowest threshold of the group. It
keeps 26% (1-shot) and 8% (5-shot) of the pairs, 2.4G of the 9.3G scores, but a survivor costs ~90 ns
to form in numpy against ~5 ns for a dense (query, product, 10 columns) block: one thread, scale 1,
44.5 s CPU with it against 28.0 s without (same process, same counts).
"""

from __future__ import annotations

import argparse
import resource
import time

from rope_size import generate

import ropebench
import ropebench.evaluation


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    args = parser.parse_args()
    emb, domains, products = generate(scale=args.scale)
    common = dict(embeddings=emb, domains=domains, product_ids=products, threads=args.threads, ci=False,
                  engine=args.engine)
    runs = [("default R@K,MRR", {}, True)]
    if not args.skip_measures:
        runs.append(("R@K,MRR,MAP@R,RP", {"measures": "R@K,MRR,MAP@R,RP"}, True))
    if args.measures_only:
        runs = runs * max(1, args.repeat)
    else:
        runs += [("default + fewshot 1,5 x10", {"fewshot": True}, True)]
        if not args.skip_per_task:
            runs.append(("   ... fewshot per task", {"fewshot": True}, False))
    found: dict[bool, object] = {}
    base_cpu = base_search = None
    for label, options, linear in runs:
        switch = ropebench.evaluation._linear_fewshot
        if not linear:  # the per-task path: what main ran before the linear screen
            ropebench.evaluation._linear_fewshot = lambda *args, **kwargs: None
        try:
            started, cpu_started = time.perf_counter(), time.process_time()
            result = ropebench.evaluate(**common, **options)
            total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        finally:
            ropebench.evaluation._linear_fewshot = switch
        extra = ""
        if base_cpu is None and not options:
            base_cpu, base_search = cpu, result.timing["search_s"]
        if result.fewshot is not None:
            section = result.fewshot
            found[linear] = section["tasks"]
            # CPU seconds are steadier than wall seconds on shared cores; few-shot's own is the
            # difference with the default run (the same retrieval work).
            cpu_extra = f", cpu {cpu - base_cpu:.1f} s" if base_cpu is not None else ""
            counters = section["counters"]
            bulk = (f", pairs counted in bulk {counters['prototype_pairs_bulk']:,} / decided one by one "
                    f"{counters['prototype_pairs_decided']:,}") if "prototype_pairs_bulk" in counters else ""
            ratio = f"; few-shot / nine retrieval tasks {section['search_s'] / base_search:.2f}x" if base_search else ""
            extra = (f"; fewshot search {section['search_s']:.1f} s{cpu_extra} ({section['screen']}, pairs "
                     f"settled {counters['pairs_settled']:,}, relevant settled "
                     f"{counters['relevant_settled']:,}{bulk}){ratio}")
        print(f"{label:28s} total {total:7.1f} s (cpu {cpu:.1f} s), search {result.timing['search_s']:7.1f} s"
              f"{extra}; peak RSS so far {_peak_mib():,.0f} MiB", flush=True)
        if "MAP@R" in result.tasks["P2V"].measures:
            cells = result.tasks["P2V"]
            print(f"   P2V MAP@R {cells['MAP@R']:.2f} RP {cells['RP']:.2f} R@1 {cells['R@1']:.2f}", flush=True)
    if len(found) == 2:
        print("few-shot numbers identical on both paths:", found[True] == found[False], flush=True)


if __name__ == "__main__":
    main()
