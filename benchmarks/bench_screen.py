"""The torch engine's screens against the default engine, in one run, at ROPE-test size.

    python benchmarks/bench_screen.py [--scale 1] [--dim 128] [--threads 2] [--repeats 1] [--device cpu]

Every method runs in a fresh subprocess (so each peak RSS is its own) on the same seeded data
(benchmarks/rope_size.py: 92,179 items at scale 1), cosine, K = 50, nine tasks, without bootstrap
intervals (so the searches are compared). Printed: seconds, the ratio to the default engine,
float64-settled pairs, peak RSS, and whether the per-query counts equal the default engine's
(a digest of every task's a, t, p columns). The float32 GEMM bounds are numpy's sgemm of every
block with no selection: ``full`` computes each intra block whole, ``intra once`` its upper half.
With a CUDA device it also times the whole evaluation from CUDA tensors and prints the GPU's name.
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
                     "search_s": result.timing["search_s"]}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mib": rss, **extra}))


def _run(method: str, args: argparse.Namespace) -> dict:
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--worker", method, "--scale", str(args.scale), "--dim",
                              str(args.dim), "--threads", str(args.threads), "--device", args.device],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "rss_mib": max(r["rss_mib"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.scale, args.dim, args.threads, args.device)
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
    auto = results.get("torch-auto", {})
    if auto.get("speedup") is not None:
        print(f"measured bf16 speed-up on a 1024 x 4096 x {args.dim} block: {auto['speedup']:.2f}x")


if __name__ == "__main__":
    main()
