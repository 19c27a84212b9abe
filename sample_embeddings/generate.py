"""Seeded generator of the bundled sample (run: python sample_embeddings/generate.py).

Writes manifest.parquet, cls.parquet (per-domain spaces, like a classification-only model) and
cls_cd.parquet (one shared space, like a model trained with the cross-domain loss) next to
this file. 300 products; each has 1-4 product pages, 0-5 short videos and 0-5 live clips, so
some products are missing from a domain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEED, N_PRODUCTS, DIM = 20261123, 300, 128
HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(SEED)
    identity = rng.normal(size=(N_PRODUCTS, DIM))
    counts = {"P": rng.integers(1, 5, N_PRODUCTS), "V": rng.integers(0, 6, N_PRODUCTS),
              "L": rng.integers(0, 6, N_PRODUCTS)}
    noise = {"P": 1.5, "V": 1.9, "L": 2.3}
    rotation = {d: np.linalg.qr(rng.normal(size=(DIM, DIM)))[0] for d in "PVL"}
    item_ids, domains, products, shared, separate = [], [], [], [], []
    for domain in "PVL":
        product = np.repeat(np.arange(N_PRODUCTS), counts[domain])
        jitter = noise[domain] * rng.normal(size=(len(product), DIM))
        view = identity[product] + jitter
        shared.append(view + 0.8 * rng.normal(size=DIM))  # a small domain offset remains
        separate.append(0.2 * view + (identity[product] + 0.5 * jitter) @ rotation[domain])  # mostly a domain's own space
        item_ids += [f"{domain}{i:05d}" for i in range(len(product))]
        domains += [domain] * len(product)
        products += [f"prod{p:04d}" for p in product]
    manifest = pa.table({"item_id": item_ids, "domain": domains, "product_id": products})
    pq.write_table(manifest, HERE / "manifest.parquet")
    for name, blocks in (("cls_cd", shared), ("cls", separate)):
        matrix = np.concatenate(blocks).astype(np.float32)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), DIM)
        pq.write_table(pa.table({"item_id": item_ids, "embedding": embedding}), HERE / f"{name}.parquet")


if __name__ == "__main__":
    main()
