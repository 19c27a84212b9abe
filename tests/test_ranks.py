"""Rank intervals across a field (``table --ranks``): hand cases, simulations with a known order,
and the command line on a suite of computed entries."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ropebench.cli import cli
from ropebench.leaderboard import init_suite
from ropebench.leaderboard.ranking import field_columns
from ropebench.stats.ranks import letter_groups, percentile_p, rank_intervals, resample_ranks

TASKS = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V", "P2P", "V2V", "L2L")
REPO = Path(__file__).resolve().parents[1]


def test_ranks_within_a_resample_share_the_better_rank() -> None:
    assert resample_ranks(np.array([[3.0, 3.0, 1.0, 5.0]])).tolist() == [[2, 2, 4, 1]]
    assert resample_ranks(np.array([[7.0, 7.0, 7.0]])).tolist() == [[1, 1, 1]]


def test_letter_groups_by_hand() -> None:
    # Best to worst 0, 1, 2; only 0 and 2 differ: {0, 1} and {1, 2} -> a, ab, b.
    different = np.zeros((3, 3), dtype=bool)
    different[0, 2] = different[2, 0] = True
    assert letter_groups([0, 1, 2], different) == ["a", "ab", "b"]
    # Nothing differs: one group; everything differs: one letter each, from the best down.
    assert letter_groups([2, 0, 1], np.zeros((3, 3), dtype=bool)) == ["a", "a", "a"]
    assert letter_groups([2, 0, 1], ~np.eye(3, dtype=bool)) == ["b", "c", "a"]


def test_percentile_p() -> None:
    # 99 of 99 replicates above 0: p = 2·(1 + 0)/100; half above half below: capped at 1; all zero: 1.
    assert percentile_p(np.ones((99, 1))).tolist() == [0.02]
    assert percentile_p(np.r_[np.ones(50), -np.ones(49)][:, None]).tolist() == [1.0]
    assert percentile_p(np.zeros((10, 1))).tolist() == [1.0]


def field(shifts: list[float], *, n_products: int = 60, per_product: int = 4, seed: int = 0,
          noise: float = 1.0) -> dict[str, pa.Table]:
    """Per-query tables of systems whose true R@1 grows with ``shift``; systems with equal shifts
    are identical (the same per-query values), so the true order is known."""
    rng = np.random.default_rng(seed)
    rows = [(task, f"{task[0]}{p}-{i}", p) for task in TASKS for p in range(n_products) for i in range(per_product)]
    task, item, product = (list(column) for column in zip(*rows))
    difficulty = rng.normal(0.0, noise, len(rows))
    tables, cache = {}, {}
    for index, shift in enumerate(shifts):
        if shift not in cache:
            hit = (difficulty + rng.normal(0.0, 0.3, len(rows)) < shift).astype(float) * 100.0
            cache[shift] = hit
        hit = cache[shift]
        tables[f"system-{index}"] = pa.table({"task": task, "item_id": item, "product_id": product,
                                              "R@1": hit, "R@5": np.maximum(hit, 50.0),
                                              "MRR@5": np.maximum(hit, 25.0)})
    return tables


def ranking_of(tables: dict[str, pa.Table], **options):
    columns, n_products = field_columns(tables)
    return rank_intervals(columns, n_products=n_products, **options)


def test_well_separated_systems_get_degenerate_intervals() -> None:
    ranking = ranking_of(field([-3.0, 0.0, 3.0]), resamples=2000)
    assert ranking.intervals["cross/R@1"] == {"system-0": (3, 3), "system-1": (2, 2), "system-2": (1, 1)}
    assert ranking.groups["cross/R@1"] == {"system-0": "c", "system-1": "b", "system-2": "a"}
    assert ranking.intervals["P2V/R@1"]["system-2"] == (1, 1)


def test_identical_systems_tie_and_share_a_group() -> None:
    ranking = ranking_of(field([0.0, 2.5, 2.5, -2.5]), resamples=2000)
    primary = ranking.intervals["cross/R@1"]
    assert primary["system-1"] == primary["system-2"] == (1, 1)  # ties share the better rank
    assert primary["system-0"] == (3, 3) and primary["system-3"] == (4, 4)
    assert ranking.groups["cross/R@1"]["system-1"] == ranking.groups["cross/R@1"]["system-2"] == "a"
    assert ranking.ranks["cross/R@1"] == {"system-0": 3, "system-1": 1, "system-2": 1, "system-3": 4}


def test_close_systems_overlap() -> None:
    ranking = ranking_of(field([0.0, 0.01, 0.02], noise=1.0), resamples=2000)
    lows, highs = zip(*ranking.intervals["cross/R@1"].values())
    assert max(lows) <= min(highs)  # every interval overlaps every other
    assert set(ranking.groups["cross/R@1"].values()) == {"a"}


def test_row_order_changes_nothing() -> None:
    tables = field([0.0, 0.2, 0.4])
    shuffled = {name: table.take(np.random.default_rng(1).permutation(len(table))) for name, table in tables.items()}
    assert ranking_of(tables, resamples=500) == ranking_of(shuffled, resamples=500)


def test_entries_on_other_queries_are_refused() -> None:
    from ropebench.errors import UsageError

    tables = field([0.0, 1.0])
    tables["system-1"] = tables["system-1"].slice(1)
    with pytest.raises(UsageError, match="different P2V queries"):
        field_columns(tables)


@pytest.mark.slow
def test_rank_intervals_cover_the_true_rank() -> None:
    """Coverage of the true rank (by the population means) is close to nominal over replications.

    Five systems whose true cross/R@1 differ by small steps; each replication draws a new set of
    products (a new test set) from the same population, and the intervals are not trivial (about
    two ranks wide). Per-entry coverage must reach the nominal 95% within Monte-Carlo error
    (≥ 0.93 over 1,000 entry-replications); percentile rank intervals are conservative when
    neighbours are well apart, so the observed coverage is above nominal (0.996 here).
    """
    shifts = np.array([0.0, 0.05, 0.10, 0.15, 0.20])
    true_rank = resample_ranks(shifts[None, :])[0]
    covered, total = 0, 0
    for replication in range(200):
        rng = np.random.default_rng(1000 + replication)
        n_products, per_product = 80, 3
        rows = [(t, f"{t}{p}-{i}", p) for t in TASKS[:6] for p in range(n_products) for i in range(per_product)]
        task, item, product = (list(column) for column in zip(*rows))
        product_effect = rng.normal(0.0, 0.6, n_products)[np.array(product)]
        query = rng.normal(0.0, 0.6, len(rows))
        tables = {}
        for index, shift in enumerate(shifts):
            own = rng.normal(0.0, 0.4, n_products)[np.array(product)]
            hit = (product_effect + query + own + rng.normal(0.0, 0.4, len(rows)) < shift).astype(float) * 100
            tables[f"s{index}"] = pa.table({"task": task, "item_id": item, "product_id": product, "R@1": hit})
        ranking = ranking_of(tables, resamples=1000, seed=replication)
        for index in range(len(shifts)):
            low, high = ranking.intervals["cross/R@1"][f"s{index}"]
            covered += low <= true_rank[index] <= high
            total += 1
    print(f"coverage of the true rank: {covered / total:.3f} over {total} entry-replications")
    assert covered / total >= 0.93, covered / total


# ----------------------------------------------------------------------------- through the CLI


def write_suite(root: Path, tables: dict[str, pa.Table]) -> None:
    """Suite ``lab`` with one computed entry per per-query table (entries written as `add` would)."""
    n_products = len(set(next(iter(tables.values())).column("product_id").to_pylist()))
    init_suite(root, "lab", items={"P": 1, "V": 1, "L": 1}, products=n_products, title="Lab", description="lab",
               label_column="model", protocol={"metric": "cosine", "ties": "expected", "ks": [1, 5], "search": "exact"})
    names = []
    for name, table in tables.items():
        path = root / "lab" / f"{name}.per_query.parquet"
        pq.write_table(table, path)
        tasks = np.array(table.column("task").to_pylist())
        results = {}
        for task in TASKS:
            mask = tasks == task
            results[task] = {"n_queries": int(mask.sum()), "n_skipped": 0, "n_gallery": 1, "n_tied": 0,
                             **{m: float(table.column(m).to_numpy()[mask].mean()) for m in ("R@1", "R@5", "MRR@5")}}
        entry = {"schema": "ropebench.entry/1", "name": name, "label": name.upper(), "suite": "lab",
                 "description": name, "source": "test", "kind": "computed",
                 "protocol": {"metric": "cosine", "ties": "expected", "ks": [1, 5], "search": "exact",
                              "group_exclusion": False},
                 "submission": {"path": "none.parquet", "sha256": "0" * 64}, "manifest": None,
                 "per_query": {"path": f"{root.name}/lab/{name}.per_query.parquet",
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
                 "results": results}
        (root / "lab" / f"{name}.json").write_text(json.dumps(entry))
        names.append(name)
    spec = json.loads((root / "lab" / "suite.json").read_text())
    (root / "lab" / "suite.json").write_text(json.dumps({**spec, "entries": names}))


def test_table_ranks_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "leaderboards"
    write_suite(root, field([-3.0, 0.0, 3.0]))
    runner = CliRunner()
    text = runner.invoke(cli, ["table", "--suite", "lab", "--ranks", "--format", "text", "--table", "1",
                               "--root", str(root)], catch_exceptions=False)
    assert text.exit_code == 0, text.output
    assert "(1–1)" in text.stdout and "(3–3)" in text.stdout and "95% rank interval among the 3" in text.stdout
    ranks_block = text.stdout.split("Ranks. ", 1)[1].splitlines()
    assert [line.split()[:3] for line in ranks_block[3:6]] == [["1", "SYSTEM-2", "a"], ["2", "SYSTEM-1", "b"],
                                                               ["3", "SYSTEM-0", "c"]]
    document = json.loads(runner.invoke(cli, ["table", "--suite", "lab", "--ranks", "--format", "json",
                                              "--root", str(root)], catch_exceptions=False).stdout)
    assert document["ranks"]["system-2"]["cross/R@1"] == [1, 1]
    assert document["ranks"]["system-0"]["P2P/R@5"] == [3, 3]
    assert set(document["ranks"]["system-0"]) == {"cross/R@1"} | {f"{t}/{m}" for t in TASKS
                                                                  for m in ("R@1", "R@5", "MRR@5")}
    assert document["rank_settings"]["resamples"] == 10_000 and document["rank_settings"]["seed"] == 0
    latex = runner.invoke(cli, ["table", "--suite", "lab", "--ranks", "--format", "latex", "--table", "1",
                                "--root", str(root)], catch_exceptions=False).stdout
    assert "(1--1)" in latex


def test_ranks_on_the_committed_sample_suite_and_refusals(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["table", "--suite", "rope-sim", "--ranks", "--format", "csv", "--root",
                                 str(REPO / "leaderboards")], catch_exceptions=False)
    assert result.exit_code == 0
    assert "R@1 rank low" in result.stdout.splitlines()[0]
    refused = runner.invoke(cli, ["table", "--suite", "rope-test", "--ranks", "--root", str(REPO / "leaderboards")])
    assert refused.exit_code == 2 and "no computed entry with a per-query file" in refused.output
