"""A distractor catalogue as a search composition needs it: its sizes parsed, every shard that will
be read validated against the test set (in parallel, by the runner), and the functions a runner
calls where a shard is (read and check it; read and scan it). See docs/scale.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ropebench.dataset import Dataset
from ropebench.engines.catalogue import ScanContext, ShardResult, scan_rows
from ropebench.engines.runners import Eta, Runner
from ropebench.errors import UsageError
from ropebench.io.distractor_checks import CatalogueInfo, ShardCheck, check_shard, merge_checks
from ropebench.io.distractors import Catalogue, Shard, plan_catalogue, read_shard

__all__ = ["parse_sizes", "check_task", "scan_task", "prepare_catalogue"]


def parse_sizes(sizes: str | Sequence[int | str] | None, n_rows: int) -> tuple[int, ...]:
    """``"0,1e5,1e6,all"`` -> ascending unique item counts; ``all`` (or None) is the whole catalogue.

    Raises:
        UsageError: a size that is not a whole number, negative, or beyond the catalogue.
    """
    if sizes is None:
        return (n_rows,)
    items = sizes.split(",") if isinstance(sizes, str) else list(sizes)
    found, bad = set(), []
    for item in items:
        text = str(item).strip().lower()
        if text == "all":
            found.add(n_rows)
            continue
        try:
            value = float(text)
        except ValueError:
            bad.append(str(item))
            continue
        if not math.isfinite(value) or value < 0 or value != int(value):
            bad.append(str(item))
        elif int(value) > n_rows:
            raise UsageError(f"--distractor-sizes {item}: the catalogue holds {n_rows:,} items. Fix: use sizes up to "
                             f"{n_rows} or 'all'")
        else:
            found.add(int(value))
    if bad or not found:
        raise UsageError(f"--distractor-sizes: {', '.join(map(repr, bad)) or 'empty'} is not a list of item counts "
                         "(e.g. 0,100000,1e6,all)")
    return tuple(sorted(found))


def check_task(shard: Shard, params: tuple[int, str, np.ndarray | None, Any]) -> ShardCheck:
    """Validate one shard (runs where the shard is read)."""
    dim, metric, center, compression = params
    return check_shard(shard, dim=dim, metric=metric, center=center, compression=compression)


def scan_task(shard: Shard, context: ScanContext) -> ShardResult:
    """Read one shard and scan it for every task (runs where the shard is read)."""
    rows = read_shard(shard)
    return scan_rows(shard.index, rows.positions, rows.domains, rows.matrix, context)


def prepare_catalogue(paths: Sequence[str | os.PathLike[str]], dataset: Dataset, *, metric: str,
                      center: np.ndarray | None, runner: Runner, sizes: str | Sequence[int | str] | None = None,
                      shard_rows: int | None = None, progress: bool = False, compression: Any = None,
                      dim: int | None = None) -> tuple[Catalogue, CatalogueInfo, tuple[int, ...]]:
    """Plan a catalogue, parse the sizes asked for, and validate every shard that will be read
    (those below the largest size) against the test set; every problem in one DataError."""
    options = {} if shard_rows is None else {"shard_rows": shard_rows}
    catalogue = plan_catalogue(paths, dim=dim or dataset.dim, **options)
    chosen = parse_sizes(sizes, catalogue.n_rows)
    shards = {shard.index: shard for shard in catalogue.shards if shard.start < chosen[-1]}
    eta = Eta("check distractors", sum(shard.n_rows for shard in shards.values()), enabled=progress)
    checks = []
    for check in runner.map(check_task, list(shards.values()), (dim or dataset.dim, metric, center, compression)):
        checks.append(check)
        eta.advance(shards[check.index].n_rows)
    eta.finish()
    info = merge_checks(checks, catalogue, test_ids=dataset.item_ids, test_products=dataset.product_ids)
    return catalogue, info, chosen
