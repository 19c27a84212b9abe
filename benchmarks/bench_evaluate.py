"""Time a full nine-task evaluation against the one-pass GEMM bound, per-task FAISS and peers.

    python benchmarks/bench_evaluate.py --dim 128 --scales 0.25,0.5,1 --repeats 3
    git worktree add /tmp/before <commit> && python benchmarks/bench_evaluate.py --before /tmp/before

Every method runs in a fresh subprocess (so each peak RSS is its own) on the same seeded
ROPE-size data (benchmarks/rope_size.py), cosine, K = 50. ropebench's engines are chosen by
name: ``ropebench`` is the default ``one-pass`` engine and ``ropebench-faiss`` the per-task
``faiss`` engine, both without the bootstrap intervals (so they compare searches);
``ropebench-ci`` is the default call, intervals included. Their engine counters are printed.
``ropebench-before`` times the same call with the ``ropebench`` of another checkout (``--before DIR``,
e.g. the commit before a change), in the same run, so the two can be compared on one noisy machine.
``cli`` writes the data to a parquet file first (untimed) and times ``ropebench evaluate`` on it
in a child process (intervals included, as the CLI computes them), reporting that child's peak
RSS. Printed: one table per (dim, scale) with
seconds (median of the repeats), the ratio to the GEMM bound, and peak RSS. Peers that are not
installed are left out (see benchmarks/requirements.txt); a peer that only runs one task or a
subset of queries is timed on that and extrapolated to nine tasks (marked "extrapolated").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

TASKS = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V", "P2P", "V2V", "L2L")


def _data(scale, dim, *, parts=True):
    """The seeded data; ``parts`` adds normalised per-domain copies for the methods that need them
    (ropebench itself gets only the raw arrays, so its peak RSS is not inflated by them)."""
    from rope_size import generate

    emb, dom, prod = generate(scale=scale, dim=dim)
    if not parts:
        return emb, dom, prod, None, None
    normed = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, dom, prod, {d: np.ascontiguousarray(normed[dom == d], dtype=np.float32) for d in "PVL"}, \
        {d: prod[dom == d] for d in "PVL"}


BOUND_TILE_SCORES = 1 << 23  # the bound's row tiles: 32 MiB of float32 scores


def _gemm_bound(parts, *, halve_intra):
    """numpy sgemm of each cross block once and each intra block once, in row tiles (no selection)."""
    pairs = [("P", "V"), ("P", "L"), ("V", "L"), ("P", "P"), ("V", "V"), ("L", "L")]
    start = time.perf_counter()
    for x, y in pairs:
        left, right = parts[x], parts[y]
        rows = max(64, min(len(left), BOUND_TILE_SCORES // len(right)))
        buffer = np.empty(rows * len(right), dtype=np.float32)
        for i0 in range(0, len(left), rows):
            i1 = min(len(left), i0 + rows)
            c0 = i0 if (halve_intra and x == y) else 0
            np.matmul(left[i0:i1], right[c0:].T, out=buffer[: (i1 - i0) * (len(right) - c0)].reshape(i1 - i0, -1))
    return time.perf_counter() - start, {}


def _ropebench(emb, dom, prod, threads, *, engine="one-pass", ci=False):
    """``ropebench.evaluate`` on arrays with a registered engine (by name). ``ci``: also the
    bootstrap intervals (the default call; off here, so the engines are compared on search)."""
    import ropebench

    start = time.perf_counter()
    result = ropebench.evaluate(embeddings=emb, domains=dom, product_ids=prod, threads=threads, engine=engine, ci=ci)
    seconds = time.perf_counter() - start
    return seconds, {"R@1": {t: result.tasks[t]["R@1"] for t in TASKS},
                     "counters": result.environment["engine"]["counters"]}


def _cli(emb, dom, prod, threads):
    """`ropebench evaluate submission.parquet` in a child process: wall time (imports, load,
    validation, search, result file) and the child's own peak RSS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "submission.parquet")
        table = pa.table({"item_id": np.arange(len(emb)), "domain": dom, "product_id": prod,
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1])})
        pq.write_table(table, path)
        del table
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ropebench", "evaluate", path, "--threads", str(threads),
                        "--out", os.path.join(tmp, "results.json")], check=True, capture_output=True)
        seconds = time.perf_counter() - start
        with open(os.path.join(tmp, "results.json"), encoding="utf-8") as handle:
            tasks = json.load(handle)["tasks"]
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, {"R@1": {t: tasks[t]["R@1"] for t in TASKS}, "child_rss_mib": rss}


def _faiss_per_task(parts, labels):
    import faiss

    start = time.perf_counter()
    r1 = {}
    for task in TASKS:
        x, y = task[0], task[2]
        index = faiss.IndexFlatIP(parts[y].shape[1])
        index.add(parts[y])
        _, ids = index.search(parts[x], 51)
        if x == y:  # drop self (the query is its own best match here; no exact duplicates in this data)
            ids = ids[:, 1:]
        r1[task] = 100 * float(np.mean(labels[y][ids[:, 0]] == labels[x]))
    return time.perf_counter() - start, r1


def _pml(parts, labels):
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(include=("precision_at_1",), k=1, device=None)
    start = time.perf_counter()
    acc = calculator.get_accuracy(parts["P"], labels["P"], parts["V"], labels["V"], ref_includes_query=False)
    one = time.perf_counter() - start
    return one * 9, {"P2V": 100 * acc["precision_at_1"]}


def _torchmetrics(parts, labels, budget_pairs=1e7):
    import torch
    from torchmetrics.retrieval import RetrievalHitRate

    q, g = parts["P"], parts["V"]
    n = max(1, min(len(q), int(budget_pairs // len(g))))
    metric = RetrievalHitRate(top_k=1)
    start = time.perf_counter()
    scores = torch.from_numpy(q[:n]) @ torch.from_numpy(g).T
    target = torch.from_numpy(labels["P"][:n, None] == labels["V"][None, :])
    indexes = torch.arange(n)[:, None].expand(n, len(g))
    value = float(metric(scores.reshape(-1), target.reshape(-1), indexes=indexes.reshape(-1)))
    elapsed = time.perf_counter() - start
    total_queries = sum(len(parts[t[0]]) for t in TASKS)
    return elapsed * total_queries / n, {"P2V@subset": 100 * value, "n_queries": n}


ROPEBENCH_METHODS = {"ropebench": {"engine": "one-pass"}, "ropebench-ci": {"engine": "one-pass", "ci": True},
                     "ropebench-faiss": {"engine": "faiss"}}


def worker(method, scale, dim, threads):
    if method == "ropebench-before":
        method = "ropebench"  # the same call; sys.path already points at the other checkout
    from ropebench.evaluation import thread_limit

    emb, dom, prod, parts, labels = _data(scale, dim, parts=method not in (*ROPEBENCH_METHODS, "cli"))
    with thread_limit(threads):
        if method == "bound":
            seconds, extra = _gemm_bound(parts, halve_intra=False)
        elif method == "bound-half":
            seconds, extra = _gemm_bound(parts, halve_intra=True)
        elif method in ROPEBENCH_METHODS:
            seconds, extra = _ropebench(emb, dom, prod, threads, **ROPEBENCH_METHODS[method])
        elif method == "cli":
            seconds, extra = _cli(emb, dom, prod, threads)
        elif method == "faiss":
            seconds, extra = _faiss_per_task(parts, labels)
        elif method == "pml":
            seconds, extra = _pml(parts, labels)
        elif method == "torchmetrics":
            seconds, extra = _torchmetrics(parts, labels)
            # ropebench's P2V R@1 on the same query subset, for the agreement check
            import ropebench

            n = extra["n_queries"]
            keep = np.flatnonzero(dom != "P")
            keep = np.concatenate([np.flatnonzero(dom == "P")[:n], keep[dom[keep] == "V"]])
            sub = ropebench.evaluate(embeddings=emb[keep], domains=dom[keep], product_ids=prod[keep], tasks="P2V",
                                     threads=threads, ci=False)
            extra["ropebench@subset"] = sub.tasks["P2V"]["R@1"]
        else:
            raise SystemExit(f"unknown method {method}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if method == "cli":
        rss = extra.pop("child_rss_mib")  # the evaluating process, not this one
        extra = extra["R@1"]
    print(json.dumps({"seconds": seconds, "rss_mib": rss, "extra": extra, "embedding_mib": emb.nbytes / 2**20}))


def _available(module):
    """Importable? Checked in a child: importing torch here would raise every later child's peak
    RSS (Linux keeps ru_maxrss across fork + exec), inflating the table's RSS column."""
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _run(method, scale, dim, threads, repeats, before=None):
    runs = []
    for _ in range(repeats):
        extra = ["--before", before] if method == "ropebench-before" and before else []
        out = subprocess.run([sys.executable, __file__, "--worker", method, "--scales", str(scale), "--dim", str(dim),
                              "--threads", str(threads), *extra], capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = float(np.median([r["seconds"] for r in runs]))
    return seconds, max(r["rss_mib"] for r in runs), runs[-1]["extra"], runs[-1]["embedding_mib"]


def _parquet_load(dim):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from rope_size import generate

    import ropebench

    emb, dom, prod = generate(scale=1.0, dim=dim)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "submission.parquet")
        table = pa.table({"item_id": np.arange(len(emb)), "domain": dom, "product_id": prod,
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)})
        pq.write_table(table, path, compression="none")
        size = os.path.getsize(path) / 2**20
        times = []
        for _ in range(3):
            start = time.perf_counter()
            ropebench.validate(path)
            times.append(time.perf_counter() - start)
    return size, float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--scales", default="0.25,0.5,1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--methods", default="bound,bound-half,ropebench,ropebench-ci,ropebench-faiss,cli,faiss,pml,"
                        "torchmetrics")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", action="store_true", help="also time loading a ~100 MB parquet submission")
    parser.add_argument("--before", help="a checkout of ropebench (e.g. git worktree add /tmp/before COMMIT) whose "
                        "default call is timed in the same run as 'ropebench-before'")
    args = parser.parse_args()
    if args.worker:
        if args.worker == "ropebench-before":
            sys.path.insert(0, str(Path(args.before).resolve()))
        worker(args.worker, float(args.scales), args.dim, args.threads)
        return
    from tabulate import tabulate

    if args.before and "ropebench-before" not in args.methods:
        args.methods = args.methods.replace("ropebench,", "ropebench,ropebench-before,", 1)
    methods = [m for m in args.methods.split(",")
               if not (m == "pml" and not _available("pytorch_metric_learning.utils.accuracy_calculator"))
               and not (m == "torchmetrics" and not _available("torchmetrics.retrieval"))]
    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
          f"numpy {np.__version__}, python {platform.python_version()}")
    labels = {"bound": "one-pass GEMM bound (numpy sgemm, full intra blocks)",
              "bound-half": "GEMM, intra blocks halved (what ropebench computes)",
              "ropebench": "ropebench.evaluate on arrays, engine one-pass (9 tasks, ci=False)",
              "ropebench-ci": "the same with the bootstrap intervals (the default call)",
              "ropebench-before": f"the same call with the ropebench of {args.before}",
              "ropebench-faiss": "ropebench.evaluate on arrays, engine faiss (per task, ci=False)",
              "cli": "ropebench evaluate submission.parquet (CLI: imports, load, search, write)",
              "faiss": "per-task faiss IndexFlatIP k=51 (9 searches)",
              "pml": "pytorch-metric-learning AccuracyCalculator p@1 (P2V x 9, extrapolated)",
              "torchmetrics": "torchmetrics RetrievalHitRate (query subset, extrapolated)"}
    for scale in [float(s) for s in args.scales.split(",")]:
        rows, results = [], {}
        for method in methods:
            results[method] = _run(method, scale, args.dim, args.threads, args.repeats, args.before)
        bound = results["bound"][0] if "bound" in results else float("nan")
        emb_mib = next(iter(results.values()))[3]
        for method, (seconds, rss, _extra, _) in results.items():
            rows.append([labels[method], f"{seconds:.2f}", f"{seconds / bound:.2f}", f"{rss:.0f}"])
        print(f"\nd={args.dim}, scale={scale} (embeddings {emb_mib:.0f} MiB; RSS limit 2x+512 = "
              f"{2 * emb_mib + 512:.0f} MiB)")
        print(tabulate(rows, headers=["method", "seconds", "x bound", "peak RSS MiB"], tablefmt="github"))
        if "ropebench" in results:
            # The limits: within 1.1x of the GEMM bound, at least 2x faster than per-task FAISS.
            one_pass = results["ropebench"][0]
            for method in ("bound", "bound-half", "ropebench-before", "ropebench-faiss", "faiss"):
                if method in results:
                    print(f"ropebench one-pass / {method}: {one_pass / results[method][0]:.2f}")
            for method in (*ROPEBENCH_METHODS, "ropebench-before"):
                if method in results:
                    print(f"{method} counters: {json.dumps(results[method][2]['counters'])}")
        if "ropebench" in results:
            r1 = results["ropebench"][2]["R@1"]
            checks = []
            if "cli" in results:
                checks.append(("CLI", max(abs(results["cli"][2][t] - r1[t]) for t in TASKS)))
            if "faiss" in results:
                checks.append(("faiss", max(abs(results["faiss"][2][t] - r1[t]) for t in TASKS)))
            for method in ("ropebench-ci", "ropebench-faiss", "ropebench-before"):
                if method in results:
                    checks.append((method, max(abs(results[method][2]["R@1"][t] - r1[t]) for t in TASKS)))
            if "pml" in results:
                checks.append(("pml P2V", abs(results["pml"][2]["P2V"] - r1["P2V"])))
            if "torchmetrics" in results:
                extra = results["torchmetrics"][2]
                checks.append(("torchmetrics P2V subset", abs(extra["P2V@subset"] - extra["ropebench@subset"])))
            print("R@1 agreement with ropebench (max abs difference, points): "
                  + ", ".join(f"{name} {diff:.4f}" for name, diff in checks))
    if args.parquet:
        size, seconds = _parquet_load(256)
        print(f"\nloading a {size:.0f} MiB parquet submission (d=256, validate included): {seconds:.2f} s")


if __name__ == "__main__":
    main()
