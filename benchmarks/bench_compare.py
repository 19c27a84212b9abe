"""Time ``ropebench compare`` and the per-task intervals at ROPE-test size (python benchmarks/bench_compare.py).

Generates two seeded per-query tables shaped like an evaluation of the ROPE test split:
31,388 product pages, 29,810 short videos and 30,981 live clips (92,179 items) over 2,527
products; every item queries the three galleries it can be scored in (its product must have an
item there, another item for an intra-domain task), so each table has about 276,000 rows in 9
tasks and 6 measures (R@1 R@5 R@10 R@20 R@50 MRR@50). ``--rows-per-item 1`` keeps one task
per item instead (92,179 rows). The first-hit rank of a query is geometric with a success
probability driven by a product effect shared by A and B, a per-system product effect (so the
difference is correlated within a product, as in real data) and query noise.

Prints seconds for: ``compare`` of two in-memory tables and of two parquet files (10,000
resamples, each test), ``--unit query``, and ``task_intervals`` of one evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
from timing import best_of  # benchmarks/timing.py (this script's directory is on sys.path)

SIZES = {"P": 31_388, "V": 29_810, "L": 30_981}
N_PRODUCTS = 2_527
TASKS = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V", "P2P", "V2V", "L2L")
KS = (1, 5, 10, 20, 50)
MEASURES = tuple(f"R@{k}" for k in KS) + ("MRR@50",)


def _measures(rank: np.ndarray) -> dict[str, np.ndarray]:
    out = {f"R@{k}": np.where(rank <= k, 100.0, 0.0) for k in KS}
    out["MRR@50"] = np.where(rank <= 50, 100.0 / rank, 0.0)
    return out


def make_tables(*, seed: int = 0, scale: float = 1.0, rows_per_item: int = 3, shift: float = 0.05):
    """Two per-query pyarrow Tables (A, B) of the same queries; B is A's system moved by ``shift``."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n_products = max(2, round(N_PRODUCTS * scale))
    product_effect = rng.normal(0.5, 1.0, n_products)
    system_effect = {"A": rng.normal(0.0, 0.3, n_products), "B": rng.normal(-shift, 0.3, n_products)}
    items = {}
    start = 0
    for domain, size in SIZES.items():
        n = max(1, round(size * scale))
        items[domain] = (np.arange(start, start + n), np.sort(rng.integers(0, n_products, n)))
        start += n
    columns: dict[str, list[np.ndarray]] = {name: [] for name in ("task", "item_id", "product_id", "domain")}
    ranks: dict[str, list[np.ndarray]] = {"A": [], "B": []}
    for task in TASKS:
        query, gallery = task[0], task[2]
        ids, products = items[query]
        per_product = np.bincount(items[gallery][1], minlength=n_products)
        keep = per_product[products] >= (2 if query == gallery else 1)
        if rows_per_item == 1:  # one task per item: the item's first task in this order
            keep &= (ids % 3) == TASKS.index(task) % 3
        ids, products = ids[keep], products[keep]
        columns["task"].append(np.full(len(ids), task))
        columns["item_id"].append(ids)
        columns["product_id"].append(products)
        columns["domain"].append(np.full(len(ids), query))
        shared = rng.normal(0.0, 1.0, len(ids))
        for name in ("A", "B"):
            logit = product_effect[products] + system_effect[name][products] + shared + rng.normal(0, 0.5, len(ids))
            hit = 1.0 / (1.0 + np.exp(-logit))
            ranks[name].append(rng.geometric(np.clip(hit, 1e-3, 1.0)))
    metadata = {b"ropebench": json.dumps({"protocol": {"metric": "cosine", "ties": "expected", "ks": list(KS)}})}
    base = {name: np.concatenate(parts) for name, parts in columns.items()}
    tables = []
    for name in ("A", "B"):
        measures = _measures(np.concatenate(ranks[name]))
        table = pa.table({"task": pa.array(base["task"].tolist(), pa.string()), "item_id": base["item_id"],
                          "product_id": base["product_id"], "domain": pa.array(base["domain"].tolist(), pa.string()),
                          **measures})
        tables.append(table.replace_schema_metadata(metadata))
    return tables[0], tables[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rows-per-item", type=int, choices=(1, 3), default=3)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--skip-query-unit", action="store_true", help="skip the (slow) --unit query timing")
    args = parser.parse_args()

    import pyarrow.parquet as pq

    from ropebench.compare import compare
    from ropebench.stats import task_intervals

    table_a, table_b = make_tables(scale=args.scale, rows_per_item=args.rows_per_item)
    n_products = len(set(table_a.column("product_id").to_pylist()))
    print(f"per-query rows: {len(table_a):,} in {len(set(table_a.column('task').to_pylist()))} tasks, "
          f"{n_products:,} products, {len(MEASURES)} measures; B = {args.resamples:,}; "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); best of {args.repeat}")
    timings = []
    with tempfile.TemporaryDirectory() as directory:
        path_a, path_b = os.path.join(directory, "a.parquet"), os.path.join(directory, "b.parquet")
        pq.write_table(table_a, path_a)
        pq.write_table(table_b, path_b)
        for test in ("randomization", "bootstrap", "t"):
            def run(test: str = test) -> None:
                compare(table_a, table_b, test=test, resamples=args.resamples)

            timings.append((f"compare tables, --test {test}", best_of(run, args.repeat)))
        timings.append(("compare parquet files (read + pair + test)",
                        best_of(lambda: compare(path_a, path_b, resamples=args.resamples), args.repeat)))
        if not args.skip_query_unit:
            timings.append(("compare tables, --unit query",
                            best_of(lambda: compare(table_a, table_b, unit="query", resamples=args.resamples), 1)))
    timings.append(("task_intervals (one evaluation)",
                    best_of(lambda: task_intervals(table_a, resamples=args.resamples), args.repeat)))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (timings on a busy machine run long)")
    width = max(len(name) for name, _ in timings)
    for name, seconds in timings:
        print(f"{name:<{width}}  {seconds:7.3f} s")
    result = compare(table_a, table_b, resamples=args.resamples)
    primary = result.primary
    if primary is not None:
        print(f"primary {primary.hypothesis}: A {primary.a:.2f} B {primary.b:.2f} delta {primary.delta:+.3f} "
              f"CI [{primary.ci[0]:.3f}, {primary.ci[1]:.3f}] p {primary.p:.4g} "
              f"design effect {primary.design_effect:.2f}")


if __name__ == "__main__":
    main()
