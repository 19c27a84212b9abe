"""Seeded ROPE-like test set plus a distractor catalogue, written as parquet with row groups.

    python benchmarks/make_catalogue.py OUT_DIR --distractors 1000000 --dim 128

Writes ``OUT_DIR/test.parquet`` (the ROPE-test-size submission of ``rope_size.py``, self-labelled)
and ``OUT_DIR/distractors.parquet``: items of *other* products built like the test items (a
product identity plus the same domain offsets and noise), so they are realistic hard negatives,
in the proportions of ROPE's train split (3.0M pages, 5.8M videos, 3.5M live clips), domains
interleaved, in row groups of ``--row-group`` rows. Ids and products never collide with the test
set's. Generated and written one row group at a time (memory: one row group and the products' identities).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rope_size import N_PRODUCTS, NOISE, SIZES, generate  # noqa: E402

TRAIN_SHARE = {"P": 3.0, "V": 5.8, "L": 3.5}  # ROPE train split, millions of items per domain
ITEMS_PER_PRODUCT = sum(SIZES.values()) / N_PRODUCTS  # as in the test split (~36)
ID_OFFSET = 1_000_000_000  # distractor ids: far from the test ids (0 ..)
PRODUCT_OFFSET = 100_000_000  # distractor products: far from the test products


def domain_offsets(dim: int, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    """The test set's per-domain offsets, replaying ``rope_size.generate``'s random draws."""
    rng = np.random.default_rng(seed)
    n_products = max(2, round(N_PRODUCTS * scale))
    rng.standard_normal((n_products, dim), dtype=np.float32)
    offsets = {}
    for domain, size in SIZES.items():
        n = max(1, round(size * scale))
        rng.integers(0, n_products, n)
        offsets[domain] = 0.3 * rng.standard_normal(dim, dtype=np.float32)
        rng.standard_normal((n, dim), dtype=np.float32)
    return offsets


def write_test(path: Path, *, dim: int, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    emb, dom, prod = generate(dim=dim, seed=seed)
    table = pa.table({"item_id": np.arange(len(emb), dtype=np.int64), "domain": dom, "product_id": prod,
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)})
    pq.write_table(table, path)


def write_distractors(path: Path, n: int, *, dim: int, seed: int, row_group: int = 65_536) -> None:
    """``n`` distractors, row group by row group (each from its own seeded generator)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    offsets = domain_offsets(dim, seed)
    domains = np.array(list(TRAIN_SHARE))
    share = np.array(list(TRAIN_SHARE.values())) / sum(TRAIN_SHARE.values())
    n_products = max(1, round(n / ITEMS_PER_PRODUCT))
    identities = np.random.default_rng([seed, 2]).standard_normal((n_products, dim), dtype=np.float32)
    schema = pa.schema([("item_id", pa.int64()), ("domain", pa.string()), ("product_id", pa.int64()),
                        ("embedding", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, row_group):
            rows = min(row_group, n - start)
            rng = np.random.default_rng([seed, 1, start])
            product = rng.integers(0, n_products, rows)
            domain = domains[rng.choice(len(domains), rows, p=share)]
            identity = identities[product]
            noise = rng.standard_normal((rows, dim), dtype=np.float32)
            emb = identity + noise * np.array([NOISE[d] for d in domain], dtype=np.float32)[:, None]
            emb += np.stack([offsets[d] for d in domain])
            table = pa.table({"item_id": np.arange(ID_OFFSET + start, ID_OFFSET + start + rows, dtype=np.int64),
                              "domain": domain, "product_id": PRODUCT_OFFSET + product,
                              "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)},
                             schema=schema)
            writer.write_table(table, row_group_size=row_group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--distractors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--row-group", type=int, default=65_536)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_test(args.out / "test.parquet", dim=args.dim, seed=args.seed)
    write_distractors(args.out / "distractors.parquet", args.distractors, dim=args.dim, seed=args.seed,
                      row_group=args.row_group)
    print(f"wrote {args.out}/test.parquet and {args.distractors:,} distractors in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
