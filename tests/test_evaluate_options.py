"""`evaluate --by category`, `--ci` / `--ci-bounds`, and the per-task intervals every result carries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ropebench.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SUB, MAN = ROOT / "sample_embeddings" / "cls_cd.parquet", ROOT / "sample_embeddings" / "manifest.parquet"


@pytest.fixture(scope="module")
def categorised(tmp_path_factory):
    """The sample manifest with a category per product (three categories)."""
    table = pq.read_table(MAN)
    names = ["shoes", "phones", "snacks"]
    categories = [names[int(p) % 3] for p in table.column("product_id").to_pylist()]
    path = tmp_path_factory.mktemp("cat") / "manifest.parquet"
    pq.write_table(table.append_column("category", pa.array(categories)), path)
    return path


def test_by_category_numbers_are_the_means_over_each_categorys_queries(categorised, tmp_path):
    out, per_query = tmp_path / "r.json", tmp_path / "q.parquet"
    result = CliRunner().invoke(cli, ["evaluate", str(SUB), "-m", str(categorised), "--by", "category",
                                      "--out", str(out), "--per-query", str(per_query), "--tasks", "P2V,L2L"])
    assert result.exit_code == 0, result.output
    assert "By category" in result.stdout and "snacks" in result.stdout
    stored = json.loads(out.read_text())
    rows = pq.read_table(per_query)
    assert set(stored["by_category"]) == {"shoes", "phones", "snacks"}
    for category, tasks in stored["by_category"].items():
        for task, cells in tasks.items():
            chosen = rows.filter(pc.and_(pc.equal(rows["task"], task), pc.equal(rows["category"], category)))
            assert cells["n_queries"] == chosen.num_rows > 0
            assert cells["R@1"] == math.fsum(chosen["R@1"].to_pylist()) / chosen.num_rows
    total = sum(tasks["P2V"]["n_queries"] for tasks in stored["by_category"].values())
    assert total == stored["tasks"]["P2V"]["n_queries"]


def test_by_category_without_the_column_is_a_usage_error(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["evaluate", str(SUB), "-m", str(MAN), "--by", "category", "--out", str(out)])
    assert result.exit_code == 2 and "'category' column" in result.output and not out.exists()


def test_ci_is_shown_as_plus_minus_or_bounds_and_brackets_every_number():
    plus = CliRunner().invoke(cli, ["evaluate", str(SUB), "-m", str(MAN), "--tasks", "P2V", "--ci"])
    bounds = CliRunner().invoke(cli, ["evaluate", str(SUB), "-m", str(MAN), "--tasks", "P2V", "--ci-bounds"])
    document = json.loads(CliRunner().invoke(cli, ["evaluate", str(SUB), "-m", str(MAN), "--tasks", "P2V",
                                                   "--format", "json"]).stdout)
    cells = document["tasks"]["P2V"]
    low, high = cells["ci"]["R@1"]
    assert f"{cells['R@1']:.2f} ± {(high - low) / 2:.2f}" in plus.stdout
    assert f"{cells['R@1']:.2f} [{low:.2f}, {high:.2f}]" in bounds.stdout
    for measure in ("R@1", "R@5", "R@10", "R@20", "R@50", "MRR@50"):
        low, high = cells["ci"][measure]
        assert low <= cells[measure] <= high


def test_threads_beyond_four_per_core_are_refused() -> None:
    import os

    import numpy as np
    import pytest

    import ropebench
    from ropebench.errors import UsageError

    with pytest.raises(UsageError, match="--threads .*more than 4 per core.*Fix"):
        ropebench.evaluate(embeddings=np.eye(4, dtype=np.float32), domains=list("PPVV"), product_ids=[0, 1, 0, 1],
                           threads=4 * (os.cpu_count() or 1) + 1)


def test_scores_that_would_overflow_float32_are_refused() -> None:
    """Values that pass validation one by one (each below sqrt(float32 max / d)) but whose norms
    multiply past 1e37 under ip: the core refuses them, since a float32 screen could overflow."""
    import numpy as np
    import pytest

    import ropebench
    from ropebench.errors import DataError

    embeddings = np.full((4, 128), 7e17, dtype=np.float32)  # validation allows up to 8.15e17 at d=128
    with pytest.raises(DataError, match="overflow float32.*Fix: rescale"):
        ropebench.evaluate(embeddings=embeddings, domains=list("PPVV"), product_ids=[0, 1, 0, 1], metric="ip",
                           ci=False)


def test_fewshot_options_without_fewshot_are_refused() -> None:
    from click.testing import CliRunner

    from ropebench.cli import cli

    result = CliRunner().invoke(cli, ["evaluate", "sample_embeddings/cls_cd.parquet", "--manifest",
                                      "sample_embeddings/manifest.parquet", "--shots", "1", "--draws", "3"])
    assert result.exit_code == 2
    assert "--shots only applies with --fewshot" in result.output and "--draws only applies" in result.output
    assert "Traceback" not in result.output
