"""Cost of --measures MAP@R,RP and --fewshot at ROPE-test size (python benchmarks/bench_fewshot_measures.py
[--scale 1.0] [--threads 2]). Prints seconds; reports numbers, never pass/fail.

Targets (issue 18): adding MAP@R,RP costs at most 1.5x the default evaluation; 1- and 5-shot with 10
draws take no longer than the nine retrieval tasks.

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

Few-shot is bound by its GEMMs: 120 tasks x 30.7k queries x 2,527 prototypes x 128 = 2.2x the flops
of the nine retrieval tasks, so no screen of the same flops meets its target.
"""

from __future__ import annotations

import argparse
import time

from rope_size import generate

import ropebench


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", default="one-pass")
    args = parser.parse_args()
    emb, domains, products = generate(scale=args.scale)
    common = dict(embeddings=emb, domains=domains, product_ids=products, threads=args.threads, ci=False,
                  engine=args.engine)
    for label, options in (("default R@K,MRR", {}), ("R@K,MRR,MAP@R,RP", {"measures": "R@K,MRR,MAP@R,RP"}),
                           ("default + fewshot 1,5 x10", {"fewshot": True})):
        started = time.perf_counter()
        result = ropebench.evaluate(**common, **options)
        total = time.perf_counter() - started
        extra = ""
        if result.fewshot is not None:
            extra = f"; fewshot search {result.fewshot['search_s']:.1f} s"
        print(f"{label:28s} total {total:7.1f} s, search {result.timing['search_s']:7.1f} s{extra}", flush=True)
        if "MAP@R" in result.tasks["P2V"].measures:
            cells = result.tasks["P2V"]
            print(f"   P2V MAP@R {cells['MAP@R']:.2f} RP {cells['RP']:.2f} R@1 {cells['R@1']:.2f}", flush=True)


if __name__ == "__main__":
    main()
