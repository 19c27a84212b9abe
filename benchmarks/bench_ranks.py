"""Time ``table --ranks`` at ROPE-test size, and ``--compress`` against one pass over the embeddings.

Ranks (python benchmarks/bench_ranks.py): a temporary leaderboard suite of ``--entries``
computed entries (default 20), each with a per-query file shaped like an evaluation of the ROPE
test split (31,388 + 29,810 + 30,981 items over 2,527 products; every item queries the galleries
it can be scored in: 276,537 rows in 9 tasks, 6 measures). System ``e``'s first-hit rank is
geometric with a success probability driven by a product effect shared by all systems, a
per-system shift (``e · 0.01``), a per-system product effect and query noise. Prints the seconds of

- ``ropebench table --suite bench --ranks --format json`` as a subprocess (everything: start-up,
  reading 20 per-query files, aligning them, the bootstrap, rendering), best of ``--repeat``;
- the same steps in process: reading + aligning, and the bootstrap (``rank_intervals``).

Compression (``--compress-only`` skips the ranks): ROPE-size float32 embeddings (d = 128) from
``rope_size.generate``; seconds of each compression against one pass over the matrix (the
cosine preparation every evaluation already does, and a plain copy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from timing import best_of  # benchmarks/timing.py (this script's directory is on sys.path)

SIZES = {"P": 31_388, "V": 29_810, "L": 30_981}
N_PRODUCTS = 2_527
TASKS = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V", "P2P", "V2V", "L2L")
KS = (1, 5, 10, 20, 50)


def _measures(rank: np.ndarray) -> dict[str, np.ndarray]:
    out = {f"R@{k}": np.where(rank <= k, 100.0, 0.0) for k in KS}
    out["MRR@50"] = np.where(rank <= 50, 100.0 / rank, 0.0)
    return out


def make_field(n_entries: int, *, seed: int = 0) -> list:
    """``n_entries`` per-query pyarrow Tables over the same queries (a field of systems)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    product_effect = rng.normal(0.5, 1.0, N_PRODUCTS)
    items, start = {}, 0
    for domain, size in SIZES.items():
        items[domain] = (np.arange(start, start + size), np.sort(rng.integers(0, N_PRODUCTS, size)))
        start += size
    rows = {name: [] for name in ("task", "item_id", "product_id", "domain")}
    logits_base = []
    for task in TASKS:
        query, gallery = task[0], task[2]
        ids, products = items[query]
        per_product = np.bincount(items[gallery][1], minlength=N_PRODUCTS)
        keep = per_product[products] >= (2 if query == gallery else 1)
        rows["task"].append(np.full(int(keep.sum()), task))
        rows["item_id"].append(ids[keep])
        rows["product_id"].append(products[keep])
        rows["domain"].append(np.full(int(keep.sum()), query))
        logits_base.append(product_effect[products[keep]] + rng.normal(0.0, 1.0, int(keep.sum())))
    base = {name: np.concatenate(parts) for name, parts in rows.items()}
    shared = np.concatenate(logits_base)
    task = pa.array(base["task"].tolist(), pa.string())
    domain = pa.array(base["domain"].tolist(), pa.string())
    metadata = {b"ropebench": json.dumps({"protocol": {"metric": "cosine", "ties": "expected", "ks": list(KS)}})}
    tables = []
    for e in range(n_entries):
        effect = rng.normal(0.01 * e, 0.3, N_PRODUCTS)
        logit = shared + effect[base["product_id"]] + rng.normal(0.0, 0.5, len(shared))
        rank = rng.geometric(np.clip(1.0 / (1.0 + np.exp(-logit)), 1e-3, 1.0))
        table = pa.table({"task": task, "item_id": base["item_id"], "product_id": base["product_id"],
                          "domain": domain, **_measures(rank)})
        tables.append(table.replace_schema_metadata(metadata))
    return tables


def write_suite(root: Path, tables: list) -> None:
    """A leaderboard root with suite ``bench`` holding one computed entry per table."""
    import pyarrow.parquet as pq

    from ropebench.leaderboard import init_suite
    from ropebench.leaderboard.readme import render_readme

    init_suite(root, "bench", items=dict(SIZES), products=N_PRODUCTS, title="bench", description="bench",
               label_column="model", protocol={"metric": "cosine", "ties": "expected", "ks": list(KS),
                                               "search": "exact"})
    names = []
    for e, table in enumerate(tables):
        name = f"system-{e:02d}"
        path = root / "bench" / f"{name}.per_query.parquet"
        pq.write_table(table, path)
        results = {}
        tasks = table.column("task").to_numpy(zero_copy_only=False)
        for task in TASKS:
            mask = tasks == task
            cells = {m: float(table.column(m).to_numpy()[mask].mean()) for m in (*(f"R@{k}" for k in KS), "MRR@50")}
            results[task] = {"n_queries": int(mask.sum()), "n_skipped": 0, "n_gallery": 1, "n_tied": 0, **cells}
        entry = {"schema": "ropebench.entry/1", "name": name, "label": name, "suite": "bench", "description": name,
                 "source": "bench", "kind": "computed",
                 "protocol": {"metric": "cosine", "ties": "expected", "ks": list(KS), "search": "exact",
                              "group_exclusion": False},
                 "submission": {"path": "none.parquet", "sha256": "0" * 64}, "manifest": None,
                 "per_query": {"path": f"{root.name}/bench/{name}.per_query.parquet",
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
                 "results": results}
        (root / "bench" / f"{name}.json").write_text(json.dumps(entry, indent=2))
        names.append(name)
    suite_file = root / "bench" / "suite.json"
    spec = json.loads(suite_file.read_text())
    suite_file.write_text(json.dumps({**spec, "entries": names}, indent=2))
    render_readme(root)


def bench_ranks(args: argparse.Namespace) -> None:
    from ropebench.leaderboard import load_suite
    from ropebench.leaderboard.ranking import field_columns, suite_ranking
    from ropebench.leaderboard.significance import per_query_of
    from ropebench.stats.ranks import rank_intervals

    tables = make_field(args.entries)
    print(f"ranks: {args.entries} entries × {len(tables[0]):,} per-query rows (9 tasks, 6 measures), "
          f"{N_PRODUCTS:,} products, B = 10,000; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "leaderboards"
        write_suite(root, tables)
        command = [sys.executable, "-m", "ropebench", "table", "--suite", "bench", "--ranks", "--format", "json",
                   "--root", str(root)]

        def cli() -> None:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

        seconds = best_of(cli, args.repeat)
        print(f"  ropebench table --ranks (subprocess, end to end)  {seconds:7.2f} s  (best of {args.repeat})")
        suite = load_suite(root, "bench")
        base = root.parent
        read = best_of(lambda: {e["name"]: per_query_of(e, base) for e in suite.entries}, 1)
        frames = {e["name"]: per_query_of(e, base) for e in suite.entries}
        align = best_of(lambda: field_columns(frames), 1)
        columns, n_products = field_columns(frames)
        boot = best_of(lambda: rank_intervals(columns, n_products=n_products), 1)
        print(f"  reading {args.entries} per-query files (sha256 checked)    {read:7.2f} s")
        print(f"  aligning rows by (task, item_id)                 {align:7.2f} s")
        print(f"  bootstrap, ranks, intervals, letter groups       {boot:7.2f} s")
        ranking = suite_ranking(suite, base=base)
        widths = [hi - lo for cell in ranking.intervals.values() for lo, hi in cell.values()]
        primary = ranking.intervals["cross/R@1"]
        print(f"  cross/R@1 intervals: {', '.join(f'{n[-2:]} {lo}–{hi}' for n, (lo, hi) in primary.items())}")
        print(f"  mean interval width over {len(widths)} entry-cells: {np.mean(widths):.2f} ranks")


def bench_compress(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from rope_size import generate

    from ropebench.compress import parse_compression
    from ropebench.engines.exact import prepare_vectors

    embeddings = generate(dim=128)[0]
    print(f"compress: {embeddings.shape[0]:,} × {embeddings.shape[1]} float32 ({embeddings.nbytes / 2**20:.0f} MiB); "
          f"best of {args.repeat}; load average {os.getloadavg()[0]:.1f}")
    copy = best_of(lambda: embeddings.copy(), args.repeat)
    normalise = best_of(lambda: prepare_vectors(embeddings, "cosine"), args.repeat)
    print(f"  one pass: a copy                     {copy:7.3f} s")
    print(f"  one pass: cosine preparation         {normalise:7.3f} s  (what every evaluation does anyway)")
    for name in ("fp16", "int8", "binary", "dims=64"):
        spec = parse_compression(name)
        seconds = best_of(lambda spec=spec: spec.apply(embeddings), args.repeat)
        print(f"  --compress {name:<8}                 {seconds:7.3f} s  = {seconds / normalise:4.2f} × the cosine "
              f"preparation, {seconds / copy:4.1f} × a copy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--compress-only", action="store_true")
    parser.add_argument("--ranks-only", action="store_true")
    args = parser.parse_args()
    if not args.compress_only:
        bench_ranks(args)
    if not args.ranks_only:
        bench_compress(args)


if __name__ == "__main__":
    main()
