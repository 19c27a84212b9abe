"""A seeded simulator of ROPE-like per-item features (NumPy only; torch is not needed).

ROPE's raw media (product pages, short videos, live streams) is licensed and not reachable
offline, so the reference baseline learns from per-item feature vectors, as if they came from
frozen image/video/text encoders. The simulator makes such vectors with the structure that
matters for the paper's ablation:

- every product ``p`` has a latent identity ``z_p ~ N(0, I_latent_dim)``;
- an item of product ``p`` in domain ``d`` varies around it (a different photo, clip or moment
  of a stream): ``h = z_p + item_noise[d] * N(0, I)``;
- each domain observes ``h`` through its *own* fixed random non-linear view, plus a nuisance
  "style" shared by unrelated products (the studio, the streamer, the background) and
  feature noise::

      x = view_d(h) + nuisance[d] * style_d[s] + feature_noise[d] * N(0, I)
      view_d(h) = W2_d · tanh(W1_d · h + b1_d) / sqrt(hidden)

  The views of the three domains are drawn independently, so raw features of two items match
  well within a domain and hardly at all across domains (cross-domain nearest neighbours are
  near chance): a model must *learn* a shared space.
- each product has 1..``max_items`` items per domain (``1 + Poisson(mean_items - 1)``), and a
  fraction ``missing_domain`` of products lack one domain entirely (never two, so every product
  can appear in at least two domains of a training batch);
- train and test are split by product: test products are unseen in training, as in ROPE.

Everything is drawn from one ``np.random.default_rng(seed)`` in a fixed order, so a seed gives
the same files bit for bit (with the same NumPy and pyarrow versions).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ropebench.protocol import DOMAINS

__all__ = ["SimulationConfig", "Simulation", "simulate", "write_simulation", "FILES"]

# The three files `simulate` writes.
FILES = ("train.parquet", "test.parquet", "test_manifest.parquet")


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulator. Per-domain values are ordered as ``DOMAINS`` (P, V, L).

    The defaults give 3,000 products (300 test products, ~2,600 test items), sized so both
    baseline arms train in well under two minutes on 2 CPU cores.
    """

    products: int = 3000
    test_fraction: float = 0.1
    latent_dim: int = 16
    feature_dim: int = 64
    hidden: int = 256
    view_gain: float = 2.0
    mean_items: float = 3.0
    max_items: int = 6
    missing_domain: float = 0.15
    styles: int = 12
    item_noise: tuple[float, float, float] = (0.30, 0.35, 0.35)
    nuisance: tuple[float, float, float] = (0.4, 0.5, 0.5)
    feature_noise: tuple[float, float, float] = (0.15, 0.25, 0.2)


@dataclass(frozen=True)
class Simulation:
    """Simulated items as column arrays (one row per item), split by product.

    Attributes:
        train / test: dicts of column arrays: ``item_id`` (str, unique over both splits),
            ``domain`` (``"P"``/``"V"``/``"L"``), ``product_id`` (int64), ``features``
            (float32, shape ``(n, feature_dim)``). Test rows are shuffled, so row order
            reveals nothing about products.
    """

    config: SimulationConfig
    seed: int
    train: dict[str, np.ndarray] = field(repr=False)
    test: dict[str, np.ndarray] = field(repr=False)


def _views(rng: np.random.Generator, cfg: SimulationConfig) -> list[dict[str, np.ndarray]]:
    views = []
    for _ in DOMAINS:
        views.append({
            "w1": rng.standard_normal((cfg.latent_dim, cfg.hidden)) * cfg.view_gain
            / np.sqrt(cfg.latent_dim),
            "b1": rng.standard_normal(cfg.hidden) * 0.5,
            "w2": rng.standard_normal((cfg.hidden, cfg.feature_dim)) / np.sqrt(cfg.hidden),
            "styles": rng.standard_normal((cfg.styles, cfg.feature_dim)),
        })
    return views


def simulate(config: SimulationConfig | None = None, *, seed: int = 0) -> Simulation:
    """Draw a simulated ROPE-like dataset (see the module docstring for the model).

    Args:
        config: simulator knobs (default ``SimulationConfig()``).
        seed: seed of the single ``np.random.default_rng`` every draw comes from.

    Returns:
        A ``Simulation`` with ``train`` and ``test`` column arrays.
    """
    cfg = config or SimulationConfig()
    if cfg.products < 10:
        raise ValueError(f"products must be at least 10, got {cfg.products}")
    rng = np.random.default_rng(seed)
    views = _views(rng, cfg)
    latent = rng.standard_normal((cfg.products, cfg.latent_dim))
    counts = np.minimum(1 + rng.poisson(cfg.mean_items - 1, size=(cfg.products, len(DOMAINS))),
                        cfg.max_items)
    lacking = rng.random(cfg.products) < cfg.missing_domain
    lacked_domain = rng.integers(0, len(DOMAINS), size=cfg.products)
    counts[lacking, lacked_domain[lacking]] = 0

    columns: dict[str, list[np.ndarray]] = {"domain": [], "product_id": [], "features": []}
    for d, (code, view) in enumerate(zip(DOMAINS, views)):
        product = np.repeat(np.arange(cfg.products), counts[:, d])
        n = len(product)
        h = latent[product] + cfg.item_noise[d] * rng.standard_normal((n, cfg.latent_dim))
        x = np.tanh(h @ view["w1"] + view["b1"]) @ view["w2"]
        x += cfg.nuisance[d] * view["styles"][rng.integers(0, cfg.styles, size=n)]
        x += cfg.feature_noise[d] * rng.standard_normal((n, cfg.feature_dim))
        columns["domain"].append(np.full(n, code))
        columns["product_id"].append(product.astype(np.int64))
        columns["features"].append(x.astype(np.float32))
    items = {name: np.concatenate(parts) for name, parts in columns.items()}

    # Split by product, then shuffle rows within each split and number the items.
    n_test = max(1, round(cfg.products * cfg.test_fraction))
    test_products = rng.permutation(cfg.products)[:n_test]
    is_test = np.isin(items["product_id"], test_products)
    order = rng.permutation(len(is_test))
    splits = {}
    start = 0
    for name, mask in (("train", ~is_test[order]), ("test", is_test[order])):
        rows = order[mask]
        split = {key: value[rows] for key, value in items.items()}
        split["item_id"] = np.array([f"{d}{start + i:06d}" for i, d in enumerate(split["domain"])])
        start += len(rows)
        splits[name] = split
    return Simulation(config=cfg, seed=seed, train=splits["train"], test=splits["test"])


def _table(columns: dict[str, np.ndarray], names: tuple[str, ...]):  # -> pyarrow.Table
    import pyarrow as pa

    arrays = []
    for name in names:
        values = columns[name]
        if name == "features":
            flat = pa.array(values.reshape(-1), type=pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
        elif name == "product_id":
            arrays.append(pa.array(values, type=pa.int64()))
        else:
            arrays.append(pa.array(values.tolist(), type=pa.string()))
    return pa.Table.from_arrays(arrays, names=list(names))


def write_simulation(simulation: Simulation, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``train.parquet``, ``test.parquet`` and ``test_manifest.parquet`` into ``out``.

    ``train``: item_id, domain, product_id, features; ``test``: item_id, domain, features (no
    labels); ``test_manifest``: item_id, domain, product_id (the ground truth; docs/formats.md).
    Each file is written atomically. Returns the written paths by file name.
    """

    from ropebench.io.files import atomic_write_with, writable_directory

    out = writable_directory(out)
    tables = {
        "train.parquet": _table(simulation.train, ("item_id", "domain", "product_id", "features")),
        "test.parquet": _table(simulation.test, ("item_id", "domain", "features")),
        "test_manifest.parquet": _table(simulation.test, ("item_id", "domain", "product_id")),
    }
    paths = {}
    for name, table in tables.items():
        path = out / name
        atomic_write_with(path, functools.partial(_write_table, table))
        paths[name] = path
    return paths


def _write_table(table: object, tmp: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, tmp)
