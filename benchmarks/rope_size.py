"""Seeded generator of ROPE-test-size embeddings (python benchmarks/rope_size.py --help).

Same sizes as the ROPE test split: 31,388 product pages, 29,810 short videos, 30,981 live clips
and 2,527 products (``scale`` shrinks every count). Structure as in ``sample_embeddings``: each
product has an identity vector; an item is its identity plus domain-specific noise and a small
domain offset, tuned so that cross-domain R@1 is around 60-85% and R@50 near 99%, like a
trained model (so the first hit is usually near the top, as in real submissions).
"""

from __future__ import annotations

import numpy as np

SIZES = {"P": 31_388, "V": 29_810, "L": 30_981}
N_PRODUCTS = 2_527
NOISE = {"P": 1.5, "V": 1.7, "L": 1.9}  # per-coordinate noise relative to a unit-variance identity


def generate(*, scale: float = 1.0, dim: int = 128, seed: int = 0):
    """Return ``(embeddings float32 (n, dim), domains (n,) str, product_ids (n,) int64)``."""
    rng = np.random.default_rng(seed)
    n_products = max(2, round(N_PRODUCTS * scale))
    identity = rng.standard_normal((n_products, dim), dtype=np.float32)
    embeddings, domains, products = [], [], []
    for domain, size in SIZES.items():
        n = max(1, round(size * scale))
        product = np.sort(rng.integers(0, n_products, n))
        offset = 0.3 * rng.standard_normal(dim, dtype=np.float32)
        noise = rng.standard_normal((n, dim), dtype=np.float32)
        noise *= NOISE[domain]
        embeddings.append(identity[product] + noise + offset)
        domains.append(np.full(n, domain))
        products.append(product.astype(np.int64))
    order = rng.permutation(sum(len(p) for p in products))  # submission order is arbitrary
    return (np.concatenate(embeddings)[order], np.concatenate(domains)[order],
            np.concatenate(products)[order])


if __name__ == "__main__":
    import argparse

    import ropebench

    parser = argparse.ArgumentParser(description="Write a ROPE-size self-labelled submission parquet "
                                     "(ropebench.write_submission: validated, written atomically).")
    parser.add_argument("out")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    emb, dom, prod = generate(scale=args.scale, dim=args.dim, seed=args.seed)
    ropebench.write_submission(args.out, np.arange(len(emb)), emb, dom, prod,
                               metadata={"generator": "benchmarks/rope_size.py", "scale": args.scale,
                                         "dim": args.dim, "seed": args.seed})
