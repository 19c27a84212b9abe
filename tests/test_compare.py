"""ropebench.compare: pairing, product-level tests and intervals per cell, the JSON, tables and CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ropebench import stats
from ropebench.compare import Comparison, compare
from ropebench.errors import DataError, UsageError
from ropebench.protocol import ALL_TASKS, CROSS_TASKS
from ropebench.render.comparison import format_p, render_comparison

KS = (1, 5, 10)
MEASURES = ("R@1", "R@5", "R@10", "MRR@10")
CELL_KEYS = ["task", "measure", "a", "b", "delta", "ci", "p", "p_holm", "significant", "wins", "ties", "losses",
             "n_queries", "n_products", "design_effect"]


def _measures(rank: np.ndarray) -> dict[str, np.ndarray]:
    out = {f"R@{k}": np.where(rank <= k, 100.0, 0.0) for k in KS}
    out["MRR@10"] = np.where(rank <= 10, 100.0 / rank, 0.0)
    return out


def make_pair(seed: int = 0, *, n_products: int = 40, shift: float = 0.0, ties: str = "expected",
              tasks: tuple[str, ...] = ALL_TASKS, system_sd: float = 0.5) -> tuple[pa.Table, pa.Table]:
    """Two per-query tables of the same queries: every product has 1-5 queries per task; the
    first-hit rank depends on a product effect shared by A and B and one per system."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.3, 1.0, n_products)
    system = {"A": rng.normal(shift, system_sd, n_products), "B": rng.normal(0.0, system_sd, n_products)}
    rows: dict[str, list[Any]] = {"task": [], "item_id": [], "product_id": []}
    for task in tasks:
        sizes = rng.integers(1, 6, n_products)
        products = np.repeat(np.arange(n_products), sizes)
        rows["task"] += [task] * len(products)
        rows["item_id"] += list(rng.choice(10_000, len(products), replace=False))
        rows["product_id"] += list(products)
    products = np.array(rows["product_id"])
    shared = rng.normal(0, 1, len(products))
    metadata = {b"ropebench": json.dumps({"protocol": {"metric": "cosine", "ties": ties, "ks": list(KS)}})}
    tables = []
    for name in ("A", "B"):
        logit = effect[products] + system[name][products] + shared + rng.normal(0, 0.5, len(products))
        rank = rng.geometric(1 / (1 + np.exp(-logit)))
        table = pa.table({"task": pa.array(rows["task"], pa.string()), "item_id": np.array(rows["item_id"]),
                          "product_id": products, "domain": pa.array([t[0] for t in rows["task"]], pa.string()),
                          **_measures(rank)})
        tables.append(table.replace_schema_metadata(metadata))
    return tables[0], tables[1]


def _cell(result: Comparison, task: str, measure: str) -> Any:
    return next(cell for cell in result.cells if cell.task == task and cell.measure == measure)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist())


# -- the numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("test", ["randomization", "bootstrap", "t"])
def test_a_against_itself_moves_nothing(test: str) -> None:
    table, _ = make_pair(1)
    result = compare(table, table, test=test, resamples=500)
    assert result.primary is not None and result.primary.delta == 0 and result.primary.p == 1.0
    assert not result.primary.significant
    assert len(result.cells) == 9 * len(MEASURES)
    for cell in result.cells:
        assert (cell.delta, cell.p, cell.p_holm, cell.significant) == (0.0, 1.0, 1.0, False), cell
        assert cell.ci == (0.0, 0.0) and cell.wins == cell.losses == 0 and cell.ties == cell.n_queries


def test_cells_are_the_task_means_and_paired_counts() -> None:
    a, b = make_pair(2, shift=0.3)
    result = compare(a, b, resamples=200)
    tasks, products = _column(a, "task"), _column(a, "product_id")
    for cell in result.cells:
        rows = tasks == cell.task
        x, y = _column(a, cell.measure)[rows], _column(b, cell.measure)[rows]
        assert cell.a == pytest.approx(x.mean(), abs=1e-12) and cell.b == pytest.approx(y.mean(), abs=1e-12)
        assert cell.delta == pytest.approx((x - y).mean(), abs=1e-12)
        assert (cell.wins, cell.ties, cell.losses) == ((x > y).sum(), (x == y).sum(), (x < y).sum())
        assert cell.n_queries == rows.sum() and cell.n_products == len(set(products[rows]))
    assert [cell.task for cell in result.cells[::len(MEASURES)]] == list(ALL_TASKS)
    assert [cell.measure for cell in result.cells[:len(MEASURES)]] == list(MEASURES)


def test_one_draw_serves_every_cell_and_the_primary_pools_per_product() -> None:
    """Recompute p and the interval of a cell and of the primary from the public matrices.

    Products are the union over tasks (a task's sums are 0 elsewhere). Primary:
    Δ_P = Σ_c P_c with P_c = Σ_{t cross} D_ct / (6 N_t); Δ*_b = Σ_c ε_bc P_c; the bootstrap
    replicate is the mean over the six tasks of Σ_c W_bc S_ct / Σ_c W_bc n_ct.
    """
    a, b = make_pair(3, shift=0.25)
    resamples, seed = 3000, 5
    result = compare(a, b, resamples=resamples, seed=seed)
    tasks, products = _column(a, "task"), _column(a, "product_id")
    # Products are resampled in the order of their ids' text (10 before 2), whatever their type.
    rank = {value: i for i, value in enumerate(sorted(set(products.tolist()), key=str))}
    products = np.array([rank[value] for value in products.tolist()])
    d = _column(a, "R@1") - _column(b, "R@1")
    n_products = products.max() + 1
    signs = stats.sign_flips(n_products, resamples=resamples, seed=seed).astype(float)
    counts = stats.bootstrap_counts(n_products, resamples=resamples, seed=seed).astype(float)
    pooled, means = np.zeros(n_products), []
    for task in CROSS_TASKS:
        rows = tasks == task
        sums = np.bincount(products[rows], weights=d[rows], minlength=n_products)
        sizes = np.bincount(products[rows], minlength=n_products)
        pooled += sums / (6 * rows.sum())
        means.append((counts @ sums) / (counts @ sizes))
        if task == "V2L":  # one ordinary cell, the same way
            cell = _cell(result, task, "R@1")
            observed = sums.sum() / rows.sum()
            null = signs @ sums / rows.sum()
            assert cell.p == (1 + np.sum(np.abs(null) >= abs(observed) - 1e-9)) / (resamples + 1)
            assert cell.ci == pytest.approx(tuple(np.quantile(means[-1], [0.025, 0.975])), abs=1e-9)
    primary = result.primary
    assert primary is not None and primary.hypothesis == "cross/R@1"
    assert primary.delta == pytest.approx(pooled.sum(), abs=1e-9)
    assert primary.delta == pytest.approx(np.mean([_cell(result, t, "R@1").delta for t in CROSS_TASKS]), abs=1e-9)
    assert primary.a == pytest.approx(np.mean([_cell(result, t, "R@1").a for t in CROSS_TASKS]), abs=1e-12)
    null = signs @ pooled
    assert primary.p == (1 + np.sum(np.abs(null) >= abs(pooled.sum()) - 1e-9)) / (resamples + 1)
    assert primary.ci == pytest.approx(tuple(np.quantile(np.mean(means, axis=0), [0.025, 0.975])), abs=1e-9)
    assert primary.significant == (primary.p < 0.05)


def test_one_changed_product_moves_only_its_cells() -> None:
    a, b = make_pair(4)
    tasks, products = _column(b, "task"), _column(b, "product_id")
    changed = (tasks == "P2L") & (products == 7)
    r1 = _column(b, "R@1")
    r1[changed] = 100.0 - r1[changed]
    b2 = b.set_column(b.schema.get_field_index("R@1"), "R@1", pa.array(r1))
    before, after = compare(a, b, resamples=2000), compare(a, b2, resamples=2000)
    moved = set()
    for old, new in zip(before.cells, after.cells):
        same = (old.delta, old.ci, old.p, old.wins, old.ties, old.losses, old.design_effect) == \
               (new.delta, new.ci, new.p, new.wins, new.ties, new.losses, new.design_effect)
        if not same:
            moved.add((old.task, old.measure))
    assert moved == {("P2L", "R@1")}
    assert before.primary != after.primary  # P2L is a cross-domain task


def test_holm_recomputed_from_the_raw_p_values() -> None:
    a, b = make_pair(5, shift=0.8)
    result = compare(a, b, resamples=2000)
    p = [cell.p for cell in result.cells]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    expected, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):  # step down: max over the smaller p of (m − rank) p
        running = max(running, min(1.0, (m - rank) * p[index]))
        expected[index] = running
    assert [cell.p_holm for cell in result.cells] == pytest.approx(expected, abs=1e-15)
    assert all(cell.p_holm >= cell.p for cell in result.cells)
    assert all(cell.significant == (cell.p_holm < 0.05) for cell in result.cells)
    assert any(cell.significant for cell in result.cells) and not all(cell.significant for cell in result.cells)
    unadjusted = compare(a, b, resamples=2000, correction="none")
    assert [cell.p_holm for cell in unadjusted.cells] == p


def test_query_unit_t_test_is_the_paired_t_test() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    a, b = make_pair(6, shift=0.3)
    result = compare(a, b, unit="query", test="t", resamples=200)
    tasks = _column(a, "task")
    for task, measure in (("P2V", "R@1"), ("L2L", "MRR@10")):
        rows = tasks == task
        reference = scipy_stats.ttest_rel(_column(a, measure)[rows], _column(b, measure)[rows])
        assert _cell(result, task, measure).p == pytest.approx(reference.pvalue, rel=1e-9)


def test_product_unit_is_wider_than_query_unit_when_products_move_together() -> None:
    a, b = make_pair(7, n_products=30, system_sd=1.5)
    by_product, by_query = compare(a, b, resamples=4000), compare(a, b, unit="query", resamples=4000)
    assert by_product.primary is not None and by_query.primary is not None
    width = {name: r.primary.ci[1] - r.primary.ci[0] for name, r in (("product", by_product), ("query", by_query))}
    deff = by_product.primary.design_effect
    assert deff == by_query.primary.design_effect and deff > 1.5  # a property of the data, not of the unit
    # √deff predicts the ratio of the interval widths (up to Monte-Carlo and small-sample error).
    assert width["product"] / width["query"] == pytest.approx(math.sqrt(deff), rel=0.25)


def test_missing_cross_tasks_and_measures() -> None:
    a, b = make_pair(8, tasks=("P2P", "V2V"))
    result = compare(a, b, resamples=200)
    assert result.primary is None and result.to_json()["primary"] is None
    a, b = make_pair(8, tasks=("V2P", "L2L"))
    result = compare(a, b, resamples=200)
    assert result.primary is not None
    assert result.primary.delta == pytest.approx(_cell(result, "V2P", "R@1").delta, abs=1e-12)


# -- inputs ----------------------------------------------------------------------------------------


def test_mismatched_protocol_measures_and_rows_are_named(tmp_path: Path) -> None:
    a, b = make_pair(9)
    _, other_ties = make_pair(9, ties="pessimistic")
    with pytest.raises(UsageError, match=r"tie policy: 'expected' in A, 'pessimistic' in B"):
        compare(a, other_ties)
    with pytest.raises(UsageError, match=r"measures: A has R@1 R@5 R@10 MRR@10, B has R@1 R@5 MRR@10"):
        compare(a, b.drop_columns(["R@10"]))
    with pytest.raises(UsageError) as error:
        compare(a, b.slice(3))
    message = str(error.value)
    assert "rows: 0 (task, item_id) row(s) only in A" not in message
    assert "3 (task, item_id) row(s) only in A" in message and "0 only in B" in message
    first = f"(P2V, {a.column('item_id')[0].as_py()})"
    assert first in message and message.count("(P2V,") <= 5
    moved = b.set_column(b.schema.get_field_index("product_id"), "product_id",
                         pa.array(_column(b, "product_id") + 1))
    with pytest.raises(UsageError, match=r"product_id: \d+ paired row\(s\) have another product in B"):
        compare(a, moved)
    with pytest.raises(DataError, match=r"1 duplicated \(task, item_id\)"):
        compare(pa.concat_tables([a, a.slice(0, 1)]), b)
    with pytest.raises(DataError, match="unknown task"):
        compare(a.set_column(0, "task", pa.array(["X2Y"] * len(a))), b)
    with pytest.raises(UsageError, match="no such file"):
        compare(tmp_path / "missing.parquet", b)
    with pytest.raises(UsageError, match="unit 'products'"):
        compare(a, b, unit="products")


def test_determinism_row_order_and_files(tmp_path: Path) -> None:
    a, b = make_pair(10, shift=0.2)
    first = compare(a, b, resamples=1000, seed=3).dumps()
    assert compare(a, b, resamples=1000, seed=3).dumps() == first  # byte for byte
    order = np.random.default_rng(0).permutation(len(a))
    assert compare(a.take(order), b.take(order[::-1]), resamples=1000, seed=3).dumps() == first
    assert compare(a, b, resamples=1000, seed=4).dumps() != first
    path_a, path_b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(a, path_a)
    pq.write_table(b, path_b)
    from_files = compare(path_a, str(path_b), resamples=1000, seed=3)
    assert from_files.cells == Comparison.from_json(json.loads(first)).cells
    assert from_files.a.path == str(path_a) and len(from_files.a.sha256 or "") == 64


def test_results_files_compare_like_their_per_query_files(tmp_path: Path) -> None:
    import ropebench

    if not hasattr(ropebench, "load_results"):
        pytest.skip("ropebench.load_results is not available")
    from tests.conftest import continuous_data

    data = continuous_data(0, (60, 50, 40), n_products=15)
    noisy = data.with_embeddings(data.embeddings + np.random.default_rng(1).normal(0, 1.0, data.embeddings.shape)
                                 .astype(np.float32))
    for name, item in (("a", data), ("b", noisy)):
        item.evaluate().write(tmp_path / f"{name}.json", per_query=tmp_path / f"{name}.parquet")
    from_results = compare(tmp_path / "a.json", tmp_path / "b.json", resamples=500)
    from_per_query = compare(tmp_path / "a.parquet", tmp_path / "b.parquet", resamples=500)
    assert from_results.cells == from_per_query.cells and from_results.primary == from_per_query.primary
    assert from_results.a.path == str(tmp_path / "a.json")
    assert from_results.primary is not None and from_results.primary.delta > 0


def test_json_shape_and_round_trip() -> None:
    a, b = make_pair(11)
    result = compare(a, b, test="bootstrap", resamples=300, seed=2, alpha=0.1)
    data = json.loads(result.dumps())
    assert list(data) == ["schema", "a", "b", "settings", "primary", "cells"]
    assert data["schema"] == "ropebench.comparison/1"
    assert data["a"] == {"path": None, "sha256": None}
    assert data["settings"] == {"unit": "product", "test": "bootstrap", "resamples": 300, "seed": 2, "alpha": 0.1,
                                "correction": "holm", "ci": "percentile"}
    assert list(data["primary"]) == ["hypothesis", "a", "b", "delta", "ci", "p", "significant", "design_effect"]
    assert all(list(cell) == CELL_KEYS for cell in data["cells"])
    assert Comparison.from_json(data) == result
    with pytest.raises(DataError, match="not a ropebench.comparison/1"):
        Comparison.from_json({"schema": "ropebench.results/1"})


# -- tables and command line --------------------------------------------------------------------------


def test_rendered_tables() -> None:
    a, b = make_pair(12, shift=1.0)
    result = compare(a, b, resamples=2000)
    text = render_comparison(result, "text")
    lines = text.splitlines()
    assert lines[2].startswith("cross (primary)  R@1")  # primary first, below the header
    assert format_p(result.primary.p) == "0.0004998" and "0.0004998" in text  # 1 / (B + 1)
    assert "B = 2000 resamples, seed 0" in text
    significant = next(cell for cell in result.cells if cell.significant)
    assert f"{significant.delta:+.2f}*" in text
    markdown = render_comparison(result, "markdown")
    assert markdown.startswith("| task") and "\\* significant at α = 0.05" in markdown
    latex = render_comparison(result, "latex")
    assert "\\toprule" in latex and "$^{*}$" in latex and "$\\Delta$" in latex
    assert (format_p(5e-5), format_p(0.0123456), format_p(1.0), format_p(None)) == ("<0.0001", "0.01235", "1.000", "–")
    assert json.loads(render_comparison(result, "json")) == result.to_json()


def test_cli_compare_writes_json_and_refuses_an_input_as_out(tmp_path: Path) -> None:
    from ropebench.cli.compare import compare_command

    a, b = make_pair(13, shift=0.3)
    path_a, path_b, out = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "comparison.json"
    pq.write_table(a, path_a)
    pq.write_table(b, path_b)
    runner = CliRunner()
    args = [str(path_a), str(path_b), "--resamples", "500", "--seed", "1"]
    result = runner.invoke(compare_command, [*args, "--format", "markdown", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("| task") and "cross (primary)" in result.output
    written = json.loads(out.read_text())
    assert written == compare(path_a, path_b, resamples=500, seed=1).to_json()
    as_json = runner.invoke(compare_command, [*args, "--format", "json"])
    assert json.loads(as_json.output) == written
    refused = runner.invoke(compare_command, [*args, "--out", str(path_b)])
    assert isinstance(refused.exception, UsageError) and "is the input B" in str(refused.exception)
    assert pq.read_table(path_b).equals(b)  # untouched
    assert "Example:" in (compare_command.help or "")


# -- null simulation through the whole comparison -------------------------------------------------------


@pytest.mark.slow
def test_null_simulation_through_compare() -> None:
    # A and B from the same distribution, each with its own product effects (sd 1.5 on the logit),
    # so a product's differences move together. MRR@10: a measure with few exact ties.
    rejections = {"product": 0, "query": 0}
    n_seeds = 600
    for seed in range(n_seeds):
        a, b = make_pair(1000 + seed, n_products=30, tasks=("P2V",), system_sd=1.5)
        for unit in rejections:
            cell = compare(a, b, unit=unit, resamples=199, seed=seed).cells[3]
            assert (cell.task, cell.measure) == ("P2V", "MRR@10")
            rejections[unit] += cell.p < 0.05
    assert 0.02 <= rejections["product"] / n_seeds <= 0.08, rejections
    assert rejections["query"] / n_seeds > 0.10 and rejections["query"] > 2 * rejections["product"], rejections
