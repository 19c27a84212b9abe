"""Cost of --measures MAP@R,RP and --fewshot at ROPE-test size (python benchmarks/bench_fewshot_measures.py
[--scale 1.0] [--threads 2]). Prints seconds; reports numbers, never pass/fail.

Targets (issue 18): adding MAP@R,RP costs at most 1.5x the default evaluation; 1- and 5-shot with 10
draws take no longer than the nine retrieval tasks.
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
