"""Catalogue-scale evaluation against the GEMM bound, on Dask, and with an approximate index.

    python benchmarks/make_catalogue.py /tmp/catalogue --distractors 1000000     # once (~15 s)
    python benchmarks/bench_catalogue.py /tmp/catalogue --sizes 250000,500000,1000000

Every measurement runs in a fresh child process (its peak RSS is its own), on the seeded
ROPE-test-size set plus the first N distractors of the catalogue, cosine, K = 50, nine tasks:

Bound and exact runs alternate, ``--repeats`` times per size, and the fastest of each counts.

- ``bound``: numpy sgemm (all threads) of exactly the blocks the search needs, each once — the
  test set's cross blocks once, its intra blocks' upper halves, and every query against every
  distractor of each domain — in row tiles of 32 MiB of scores, nothing else (vectors prepared
  and in memory beforehand, untimed);
- ``exact``: ``ropebench.scale.evaluate`` on the parquet files (load, validation of the test set
  and of the catalogue, search, settlement, result), in this process's threads;
- ``dask``: the same with a local Dask cluster of ``--workers`` processes (one thread each);
- ``index``: the same with ``--index`` / ``--nprobe`` and its agreement on 2000 queries per task.

Printed: one table (seconds, ratio to the bound of the same size, items per second, peak RSS),
whether Dask's numbers equal the in-process ones, the index's agreement, and the extrapolation of
the measured throughput to ROPE test + train (12.4M items). Progress goes to stderr. The machine
may be shared: compare the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from timing import catalogue_gemm

import ropebench

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ROPE_TRAIN = 12_300_000  # ROPE's train split (3.0M pages, 5.8M videos, 3.5M live clips)
TILE_SCORES = 1 << 23  # the bound's row tiles: 32 MiB of float32 scores


def _prepared(data: Path, size: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Normalised test vectors and the first ``size`` distractors, per domain."""
    from ropebench.engines.exact import prepare_vectors
    from ropebench.io.distractors import plan_catalogue, read_shard
    from ropebench.protocol import DOMAINS

    dataset = ropebench.validate(str(data / "test.parquet"))
    assert dataset.embeddings is not None
    test = {code: prepare_vectors(dataset.embeddings[dataset.members(code)], "cosine")[0] for code in DOMAINS}
    parts: dict[str, list[np.ndarray]] = {code: [] for code in DOMAINS}
    for shard in plan_catalogue([data / "distractors.parquet"]).shards:
        if shard.start >= size:
            break
        rows = read_shard(shard)
        keep = rows.positions < size
        for index, code in enumerate(DOMAINS):
            chosen = keep & (rows.domains == index)
            parts[code].append(prepare_vectors(rows.matrix[chosen], "cosine")[1])
    return test, {code: np.concatenate(p) if p else np.zeros((0, 128), np.float32) for code, p in parts.items()}


def _bound(data: Path, size: int) -> dict[str, float]:
    test, distractors = _prepared(data, size)
    blocks = [("P", test["V"], False), ("P", test["L"], False), ("V", test["L"], False),
              ("P", test["P"], True), ("V", test["V"], True), ("L", test["L"], True)]
    started, started_cpu = time.perf_counter(), _cpu()
    for x, right, upper in blocks:  # the test set: row tiles of 32 MiB, as bench_evaluate.py
        left = test[x]
        rows = max(64, min(len(left), TILE_SCORES // max(1, len(right))))
        buffer = np.empty(rows * max(1, len(right)), dtype=np.float32)
        for i0 in range(0, len(left), rows):
            i1 = min(len(left), i0 + rows)
            c0 = i0 if upper else 0
            np.matmul(left[i0:i1], right[c0:].T, out=buffer[: (i1 - i0) * (len(right) - c0)].reshape(i1 - i0, -1))
    tested, tested_cpu = time.perf_counter(), _cpu()
    catalogue_gemm(test, distractors)  # the catalogue
    done = time.perf_counter()
    return {"seconds": done - started, "test_s": tested - started, "distractors_s": done - tested,
            "cpu_s": _cpu() - started_cpu, "test_cpu_s": tested_cpu - started_cpu}


def _cpu() -> float:
    """CPU seconds of this process, every thread (robust to other work sharing the cores)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _evaluate(data: Path, size: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:

    options: dict[str, Any] = {"threads": args.threads, "ci": False, "progress": True}
    if mode == "dask":
        options.update(engine="dask", workers=args.workers)
    if mode == "index":
        options.update(index=args.index, nprobe=args.nprobe, agreement_queries=args.agreement_queries)
    started, started_cpu = time.perf_counter(), _cpu()
    result = ropebench.evaluate(str(data / "test.parquet"), distractors=[str(data / "distractors.parquet")],
                            distractor_sizes=str(size), **options)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu_s": _cpu() - started_cpu, "timing": dict(result.timing),
            "tasks": result.to_json()["tasks"],
            "engine": result.environment["engine"], "agreement": result.extra.get("agreement")}


def _child(args: argparse.Namespace) -> None:
    size = int(args.size)
    data = Path(args.data)
    out = _bound(data, size) if args.child == "bound" else _evaluate(data, size, args.child, args)
    print(json.dumps(out))


def _run(args: argparse.Namespace, mode: str, size: int) -> dict[str, Any]:
    """One child process; its own peak RSS from wait4."""
    command = [sys.executable, __file__, str(args.data), "--child", mode, "--size", str(size), "--threads",
               str(args.threads), "--workers", str(args.workers), "--index", args.index, "--nprobe", str(args.nprobe),
               "--agreement-queries", str(args.agreement_queries)]
    print(f"[{time.strftime('%H:%M:%S')}] {mode} at {size:,} distractors ...", file=sys.stderr, flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    assert process.stdout is not None
    output = process.stdout.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{mode} at {size} failed with exit code {process.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    result["rss_mib"] = usage.ru_maxrss / 1024
    print(f"[{time.strftime('%H:%M:%S')}] {mode} at {size:,}: {result['seconds']:.1f} s, "
          f"{result['rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    return result


def _numbers(run: dict[str, Any]) -> dict[str, Any]:
    tasks = run["tasks"]
    assert isinstance(tasks, dict)
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="directory written by make_catalogue.py")
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dask-size", type=int, default=None, help="default: the largest size (0: skip)")
    parser.add_argument("--index", default="IVF1024,Flat")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--agreement-queries", type=int, default=2000)
    parser.add_argument("--index-size", type=int, default=None, help="default: the largest size (0: skip)")
    parser.add_argument("--repeats", type=int, default=1, help="bound and exact runs per size (the fastest counts: "
                        "other work on a shared machine only ever slows a run down)")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    largest = max(sizes)
    runs: dict[str, dict[str, Any]] = {}
    for size in sizes:  # bound and exact side by side, so both see the same machine; the fastest of the repeats
        for _ in range(args.repeats):
            for mode in ("bound", "exact"):
                run = _run(args, mode, size)
                best = runs.get(f"{mode} {size}")
                if best is None or run["seconds"] < best["seconds"]:
                    runs[f"{mode} {size}"] = run
    dask_size = largest if args.dask_size is None else args.dask_size
    if dask_size:
        runs[f"dask {dask_size}"] = _run(args, "dask", dask_size)
    index_size = largest if args.index_size is None else args.index_size
    if index_size:
        runs[f"index {index_size}"] = _run(args, "index", index_size)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    report(runs, sizes, dask_size, index_size, args)


def _seconds(run: dict[str, Any]) -> float:
    value = run["seconds"]
    assert isinstance(value, float)
    return value


def report(runs: dict[str, dict[str, Any]], sizes: list[int], dask_size: int, index_size: int,
           args: argparse.Namespace) -> None:
    n_test = 92_179
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, numpy {np.__version__}, "
          f"python {platform.python_version()}; d=128, cosine, K=50, nine tasks, {n_test:,} test items")
    print("\n| distractors | GEMM bound: wall (test + catalogue), CPU | search wall (× bound) | of which test set / "
          "catalogue | total with load and checks: wall, CPU (× bound's CPU) | peak RSS |\n"
          "|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        bound, exact = runs[f"bound {size}"], runs[f"exact {size}"]
        timing = exact["timing"]
        search = float(timing["search_s"])
        print(f"| {size:,} | {_seconds(bound):.1f} s ({bound['test_s']:.1f} + {bound['distractors_s']:.1f}), "
              f"{bound['cpu_s']:.0f} CPU s | {search:.1f} s ({search / _seconds(bound):.2f}×) | "
              f"{timing['test_search_s']:.1f} + {timing['distractors_s']:.1f} s | {_seconds(exact):.1f} s, "
              f"{exact['cpu_s']:.0f} CPU s ({exact['cpu_s'] / bound['cpu_s']:.2f}×) | {exact['rss_mib']:.0f} MiB |")
    small, big = runs[f"exact {sizes[0]}"], runs[f"exact {sizes[-1]}"]
    growth = 100 * (float(big["rss_mib"]) / float(small["rss_mib"]) - 1)
    print(f"\npeak RSS {sizes[0]:,} -> {sizes[-1]:,}: {growth:+.1f}%")
    passes = np.array([float(runs[f"exact {s}"]["timing"]["distractors_s"]) for s in sizes])
    test_part = float(np.mean([float(runs[f"exact {s}"]["timing"]["test_search_s"]) for s in sizes]))
    slope, intercept = np.polyfit(np.array(sizes, dtype=float), passes, 1)
    fitted = intercept + slope * np.array(sizes)
    print(f"catalogue pass ≈ {intercept:.1f} s + {slope * 1e6:.1f} s per million distractors (largest deviation "
          f"from the line {np.max(np.abs(fitted - passes) / passes) * 100:.1f}%); per item: "
          + ", ".join(f"{1e6 * p / s:.1f} µs" for p, s in zip(passes, sizes)))
    if dask_size:
        dask, here = runs[f"dask {dask_size}"], runs[f"exact {dask_size}"]
        same = _numbers(dask) == _numbers(here)
        mine, theirs = dask["timing"], here["timing"]
        assert isinstance(mine, dict) and isinstance(theirs, dict)
        print(f"\nDask, {args.workers} local worker processes, {dask_size:,} distractors: catalogue pass "
              f"{mine['distractors_s']:.1f} s vs {theirs['distractors_s']:.1f} s in process "
              f"({theirs['distractors_s'] / mine['distractors_s']:.2f}× the in-process throughput); whole search "
              f"{mine['search_s']:.1f} s vs {theirs['search_s']:.1f} s ({theirs['search_s'] / mine['search_s']:.2f}×); "
              f"numbers identical: {same}")
    if index_size:
        index, here = runs[f"index {index_size}"], runs[f"exact {index_size}"]
        agreement = index["agreement"]
        assert isinstance(agreement, dict)
        timing = index["timing"]
        assert isinstance(timing, dict)
        print(f"\n--index {args.index} --nprobe {args.nprobe} at {index_size:,}: total {_seconds(index):.1f} s "
              f"(build {timing.get('index_build_s', 0):.1f} s, search {timing.get('index_search_s', 0):.1f} s, "
              f"agreement {timing.get('agreement_s', 0):.1f} s) vs exact {_seconds(here):.1f} s")
        print("| task | unchanged first-hit rank | |ΔR@1| | |ΔR@10| | |ΔR@50| |\n|---|---:|---:|---:|---:|")
        for task, value in agreement.items():
            delta = value["delta"]
            print(f"| {task} | {100 * value['unchanged']:.1f}% | {delta['R@1']:.2f} | {delta['R@10']:.2f} | "
                  f"{delta['R@50']:.2f} |")
    catalogue = n_test + ROPE_TRAIN
    here = test_part + intercept + slope * catalogue
    print(f"\nROPE test + train ({catalogue / 1e6:.1f}M items), extrapolated from the fitted line: "
          f"{here / 60:.0f} min on this machine ({args.threads} cores)")
    if dask_size:
        # Distractor throughput alone (the test set's own search runs once, in the client).
        per_worker = dask_size / float(runs[f"dask {dask_size}"]["timing"]["distractors_s"]) / args.workers
        for workers in (2, 8, 32, 128):
            minutes = (test_part + catalogue / (per_worker * workers)) / 60
            print(f"  on {workers} workers like these (Dask, one core each): {minutes:.1f} min")


if __name__ == "__main__":
    main()
