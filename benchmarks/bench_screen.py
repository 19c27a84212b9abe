"""The torch engine's screens against the default engine, in one run: at ROPE-test size, and with
a distractor catalogue at several sizes.

    python benchmarks/bench_screen.py [--scale 1] [--dim 128] [--threads 2] [--repeats 1] [--device cpu]
        [--distractors 250000,1000000] [--queries-scale 1] [--methods cat-bound,one-pass,torch-fp32,torch-bf16]
        [--skip-test-set] [--catalogue /tmp/ropebench-screen-catalogue]

Every method runs in a fresh subprocess (so each peak RSS is its own) on the same seeded data
(benchmarks/rope_size.py: 92,179 items at scale 1), cosine, K = 50, nine tasks, without bootstrap
intervals (so the searches are compared). Printed: seconds, the ratio to the default engine,
float64-settled pairs, peak RSS, and whether the per-query counts equal the default engine's
(a digest of every task's a, t, p columns). The float32 GEMM bounds are numpy's sgemm of every
block with no selection: ``full`` computes each intra block whole, ``intra once`` its upper half.
With a CUDA device it also times the whole evaluation from CUDA tensors (which stay on the GPU)
and prints the GPU's name and the rows that evaluation copied to the host.

The distractor rows use make_catalogue.py's seeded catalogue (its ROPE-test-size test set and
distractors of other products in ROPE-train proportions, row groups of 65,536), written once under
``--catalogue`` and reused; each size is a prefix of the largest (``--distractor-sizes N``), read
from parquet and validated as a user's run would. ``--queries-scale`` keeps that fraction of the
test set's products (all their items) as the queries: 92k queries against 1M distractors at d=128
are 12 T multiply-adds, minutes per method on two cores. Per method and size: seconds, CPU seconds
(every thread's; less disturbed by other load), the catalogue pass (and per million distractors),
distractor pairs settled in float64, peak RSS, same per-query counts as the default engine. The
bound is numpy sgemm (all threads) of the test set's blocks once and every query against every
distractor, the distractors read and prepared beforehand (untimed).

Measured (``--skip-test-set --distractors 250000,1000000 --queries-scale 0.25``: 22,920 queries;
2-core Intel Xeon with AMX, shared with other work; torch 2.13.0+cpu, numpy 2.4.6 / OpenBLAS;
"settled": distractor pairs settled in float64, "same": per-query counts equal the default engine's):

| distractors | method | seconds (× default) | CPU s (× default) | catalogue pass (per M) | settled | RSS | same |
|---:|---|---:|---:|---:|---:|---:|---|
| 250,000 | float32 GEMM bound | 27.8 (0.98) | 18 (0.95) | | | 629 MiB | |
| 250,000 | default engine | 28.4 (1) | 19 (1) | 24.3 s (97 s/M) | 510 | 516 MiB | |
| 250,000 | torch fp32 | 20.4 (0.72) | 19 (1.05) | 15.7 s (63 s/M) | 520 | 747 MiB | yes |
| 250,000 | torch bf16 | 12.4 (0.44) | 10 (0.56) | 8.2 s (33 s/M) | 646,919 | 743 MiB | yes |
| 1,000,000 | float32 GEMM bound | 81.8 (0.90) | 61 (0.85) | | | 1,424 MiB | |
| 1,000,000 | default engine | 90.8 (1) | 72 (1) | 83.7 s (84 s/M) | 2,220 | 543 MiB | |
| 1,000,000 | torch fp32 | 76.6 (0.84) | 77 (1.07) | 68.2 s (68 s/M) | 2,254 | 753 MiB | yes |
| 1,000,000 | torch bf16 | 34.9 (0.38) | 35 (0.48) | 26.5 s (27 s/M) | 2,584,727 | 759 MiB | yes |

All 92,179 queries (``--skip-test-set --distractors 1000000 --queries-scale 1 --methods
one-pass,torch-bf16``): default engine 228.7 s (CPU 239 s, catalogue pass 216.8 s, 5,365 settled,
724 MiB); torch bf16 84.4 s (0.37×; CPU 84 s, 0.35×; catalogue pass 70.3 s; 6,448,147 settled;
1,013 MiB); same counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

METHODS = {
    "bound": "float32 GEMM bound, full (numpy sgemm, no selection)",
    "bound-half": "float32 GEMM bound, intra blocks once",
    "one-pass": "default engine (one-pass, numpy float32)",
    "torch-fp32": "torch --screen fp32",
    "torch-bf16": "torch --screen bf16",
    "torch-auto": "torch (screen measured)",
    "torch-cuda-tensors": "torch from CUDA tensors, end to end",
}


def _digest(result) -> str:
    table = result.per_query
    digest = hashlib.sha256()
    for name in ("task", "item_id", "a", "t", "p"):
        digest.update(repr(table.column(name).to_pylist()).encode())
    return digest.hexdigest()[:16]


CATALOGUE_METHODS = {
    "cat-bound": "float32 GEMM bound (numpy sgemm: test blocks once + every query x every distractor)",
    "one-pass": "default engine (one-pass, numpy float32 shards)",
    "torch-fp32": "torch --screen fp32 (shards on the device in fp32)",
    "torch-bf16": "torch --screen bf16 (shards on the device in bf16)",
}
SEED = 0


def catalogue_dir(root: Path, dim: int, n: int) -> Path:
    """The seeded catalogue of benchmarks/make_catalogue.py (ROPE-test-size test set plus ``n``
    distractors), written once under ``root`` and reused by later runs."""
    from make_catalogue import write_distractors, write_test

    folder = root / f"d{dim}-n{n}-seed{SEED}"
    if not (folder / "complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"writing {n:,} distractors to {folder} (once) ...", file=sys.stderr, flush=True)
        write_test(folder / "test.parquet", dim=dim, seed=SEED)
        write_distractors(folder / "distractors.parquet", n, dim=dim, seed=SEED)
        (folder / "complete").write_text("")
    return folder


def test_subset(folder: Path, queries_scale: float):
    """The catalogue's test set, keeping the products ``< round(N_PRODUCTS × queries_scale)``
    (all their items: the same distribution as the whole set, fewer queries)."""
    import numpy as np
    import pyarrow.parquet as pq
    from rope_size import N_PRODUCTS

    table = pq.read_table(folder / "test.parquet")
    products = table.column("product_id").to_numpy()
    keep = products < max(2, round(N_PRODUCTS * queries_scale))
    matrix = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(products), -1)
    domains = table.column("domain").to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(matrix[keep]), domains[keep], products[keep], table.column("item_id").to_numpy()[keep]


def _catalogue_bound(test: dict, path: Path, size: int) -> tuple[float, float]:
    """numpy sgemm (all threads) of the test set's blocks once and of every query against every
    distractor of each domain; the distractors are read and prepared first
    (untimed), as the bound has no I/O."""
    import numpy as np
    from bench_evaluate import _gemm_bound
    from timing import catalogue_gemm

    from ropebench.engines.exact import prepare_vectors
    from ropebench.io.distractors import plan_catalogue, read_shard
    from ropebench.protocol import DOMAINS

    parts: dict[str, list] = {code: [] for code in DOMAINS}
    for shard in plan_catalogue([path]).shards:
        if shard.start >= size:
            break
        rows = read_shard(shard)
        keep = rows.positions < size
        for index, code in enumerate(DOMAINS):
            parts[code].append(prepare_vectors(rows.matrix[keep & (rows.domains == index)], "cosine")[1])
    distractors = {code: np.concatenate(p) for code, p in parts.items()}
    cpu_started = _cpu()
    seconds, _ = _gemm_bound(test, halve_intra=True)
    started = time.perf_counter()
    catalogue_gemm(test, distractors)
    return seconds + time.perf_counter() - started, _cpu() - cpu_started


def _cpu() -> float:
    """CPU seconds of this process, every thread's (less disturbed by other load than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def catalogue_worker(method: str, size: int, queries_scale: float, folder: Path, threads: int, device: str) -> None:
    import numpy as np

    import ropebench
    from ropebench.evaluation import thread_limit

    emb, dom, prod, ids = test_subset(folder, queries_scale)
    path = folder / "distractors.parquet"
    extra: dict = {}
    with thread_limit(threads):
        if method == "cat-bound":
            normed = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            test = {d: np.ascontiguousarray(normed[dom == d], dtype=np.float32) for d in "PVL"}
            seconds, cpu = _catalogue_bound(test, path, size)
        else:
            options: dict = {"engine": "one-pass"} if method == "one-pass" else \
                {"engine": "torch", "device": device, "screen": method.split("-")[1]}
            start, cpu_started = time.perf_counter(), _cpu()
            result = ropebench.evaluate(embeddings=emb, domains=dom, product_ids=prod, item_ids=ids,
                                        distractors=[str(path)], distractor_sizes=str(size), threads=threads,
                                        ci=False, **options)
            seconds, cpu = time.perf_counter() - start, _cpu() - cpu_started
            engine = result.environment["engine"]
            counters = engine["counters"]
            extra = {"settled": counters["pairs_settled"], "distractor_settled": counters["distractor_pairs_settled"],
                     "digest": _digest(result), "shards_s": result.timing["shards_s"],
                     "screened": engine["shards"]["multiply_adds"], "queries": len(emb)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rss_mib": rss, **extra}))


def worker(method: str, scale: float, dim: int, threads: int, device: str) -> None:
    from bench_evaluate import _data, _gemm_bound

    import ropebench
    from ropebench.evaluation import thread_limit

    bound = method.startswith("bound")
    emb, dom, prod, parts, _ = _data(scale, dim, parts=bound)
    extra: dict = {}
    with thread_limit(threads):
        if bound:
            seconds, _ = _gemm_bound(parts, halve_intra=method == "bound-half")
        else:
            options: dict = {"engine": "one-pass"} if method == "one-pass" else {"engine": "torch", "device": device}
            if method in ("torch-fp32", "torch-bf16"):
                options["screen"] = method.split("-")[1]
            embeddings = emb
            if method == "torch-cuda-tensors":
                import torch

                embeddings = torch.from_numpy(emb).to(device)
                options.pop("device")  # the tensor's device
            start = time.perf_counter()
            result = ropebench.evaluate(embeddings=embeddings, domains=dom, product_ids=prod, threads=threads,
                                        ci=False, **options)
            seconds = time.perf_counter() - start
            engine = result.environment["engine"]
            extra = {"settled": engine["counters"]["pairs_settled"], "digest": _digest(result),
                     "screen": engine.get("screen", "fp32"), "device_name": engine.get("device_name"),
                     "band_median": engine.get("band_median"), "speedup": engine.get("bf16_speedup"),
                     "search_s": result.timing["search_s"], "n": len(emb),
                     "host_rows": engine["counters"].get("host_rows")}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss, **extra}))


def _run(method: str, args: argparse.Namespace, size: int | None = None) -> dict:
    runs = []
    command = [sys.executable, __file__, "--worker", method, "--scale", str(args.scale), "--dim", str(args.dim),
               "--threads", str(args.threads), "--device", args.device]
    if size is not None:
        command += ["--size", str(size), "--queries-scale", str(args.queries_scale), "--folder", str(args.folder)]
    for _ in range(args.repeats):
        print(f"[{time.strftime('%H:%M:%S')}] {method}" + ("" if size is None else f" at {size:,} distractors"),
              file=sys.stderr, flush=True)
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{method} failed:\n{out.stderr}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {runs[-1]}", file=sys.stderr, flush=True)  # kept if a later run fails
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "rss_mib": max(r["rss_mib"] for r in runs)}


def _catalogue_rows(args: argparse.Namespace) -> None:
    """The distractor rows: every method at every size, ratios to the default engine of that size."""
    from tabulate import tabulate

    sizes = [int(float(size)) for size in args.distractors.split(",") if float(size) > 0]
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(CATALOGUE_METHODS))
    if unknown or "one-pass" not in methods:
        raise SystemExit(f"--methods: {', '.join(unknown) or 'one-pass missing'}; choose from "
                         f"{', '.join(CATALOGUE_METHODS)} (one-pass is the ratios' base)")
    args.folder = catalogue_dir(args.catalogue, args.dim, max(sizes))  # written before any timing
    rows = []
    for size in sizes:  # a smaller size is a prefix of the same catalogue (--distractor-sizes N)
        results = {method: _run(method, args, size) for method in methods}
        base = results["one-pass"]
        for method, r in results.items():
            same = "" if "digest" not in r else ("yes" if r["digest"] == base["digest"] else "NO")
            per_million = r["shards_s"] / size * 1e6 if "shards_s" in r else None
            rows.append([f"{size:,}", CATALOGUE_METHODS[method], f"{r['seconds']:.1f}",
                         f"{r['seconds'] / base['seconds']:.2f}",
                         f"{r['cpu_s']:.0f} ({r['cpu_s'] / base['cpu_s']:.2f})",
                         "" if per_million is None else f"{r['shards_s']:.1f} ({per_million:.0f} s/M)",
                         r.get("distractor_settled", ""), f"{r['rss_mib']:.0f}", same])
        queries = base["queries"]
    print(f"\ndistractors: the seeded catalogue of make_catalogue.py (cached under {args.catalogue}), d={args.dim}, "
          f"cosine, nine tasks, {queries:,} test items (queries-scale {args.queries_scale}), {args.threads} threads, "
          f"device {args.device}; best of {args.repeats}")
    print(tabulate(rows, headers=["distractors", "method", "seconds", "x default", "CPU s (x default)",
                                  "catalogue pass s (per M)",
                                  "distractor pairs settled", "peak RSS MiB", "same counts"], tablefmt="github"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--distractors", default="250000,1000000",
                        help="catalogue sizes of the distractor rows (0: none) [default: 250000,1000000]")
    parser.add_argument("--queries-scale", type=float, default=1.0,
                        help="distractor rows: the fraction of the test set's products kept as queries")
    parser.add_argument("--catalogue", type=Path, default=Path("/tmp/ropebench-screen-catalogue"),
                        help="where the seeded catalogue is written once and reused")
    parser.add_argument("--skip-test-set", action="store_true", help="only the distractor rows")
    parser.add_argument("--methods", default=",".join(CATALOGUE_METHODS),
                        help=f"distractor rows' methods (one-pass is needed) [default: {','.join(CATALOGUE_METHODS)}]")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker and args.size is not None:
        catalogue_worker(args.worker, args.size, args.queries_scale, args.folder, args.threads, args.device)
        return
    if args.worker:
        worker(args.worker, args.scale, args.dim, args.threads, args.device)
        return
    if args.skip_test_set:
        _catalogue_rows(args)
        return
    from tabulate import tabulate

    from ropebench.provenance import cpu_name

    methods = [m for m in METHODS if m != "torch-cuda-tensors" or args.device.startswith("cuda")]
    results = {method: _run(method, args) for method in methods}
    base = results["one-pass"]
    rows = []
    for method, r in results.items():
        same = "" if "digest" not in r else ("yes" if r["digest"] == base["digest"] else "NO")
        rows.append([METHODS[method] + (f" [{r['screen']}]" if method == "torch-auto" else ""), f"{r['seconds']:.2f}",
                     f"{r['seconds'] / base['seconds']:.2f}", r.get("settled", ""),
                     "" if r.get("band_median") is None else f"{r['band_median']:.2g}", f"{r['rss_mib']:.0f}", same])
    device = next((r["device_name"] for m, r in results.items() if m.startswith("torch") and r.get("device_name")),
                  cpu_name())
    print(f"scale {args.scale} (92,179 items at 1), d={args.dim}, cosine, nine tasks, {args.threads} threads; "
          f"device: {args.device} ({device}); best of {args.repeats}")
    print(tabulate(rows, headers=["method", "seconds", "x default", "pairs settled", "band median", "peak RSS MiB",
                                  "same counts"], tablefmt="github"))
    tensors = results.get("torch-cuda-tensors", {})
    if tensors.get("host_rows") is not None:
        print(f"from CUDA tensors: {tensors['host_rows']:,} rows copied to the host (of {tensors['n']:,}; "
              "docs/screening.md, \"CUDA tensors\")")
    auto = results.get("torch-auto", {})
    if auto.get("speedup") is not None:
        print(f"measured bf16 speed-up on a 1024 x 4096 x {args.dim} block: {auto['speedup']:.2f}x")
    if any(float(size) > 0 for size in args.distractors.split(",")):
        _catalogue_rows(args)


if __name__ == "__main__":
    main()
