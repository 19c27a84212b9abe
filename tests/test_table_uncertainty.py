"""`ropebench table --ci` and `--significance`: intervals and marks from stored per-query files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ropebench.cli import cli
from ropebench.stats import task_intervals

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["table", *args, "--root", str(ROOT / "leaderboards")])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_significance_marks_only_the_entry_that_differs_from_the_baseline():
    rows = json.loads(run("--suite", "rope-sim", "--table", "1", "--significance", "--format", "json"))["tables"][0]
    by_entry = {}
    for row in rows["rows"]:
        by_entry.setdefault(row["entry"], []).append(row)
    # cls is the baseline: never marked; cls-cd is 55-70 points better at R@1 on 300 products: every
    # R@1 cell is significant after Holm.
    assert not any(row[f"{m} significant"] for row in by_entry["cls"] for m in ("R@1", "R@5", "MRR@50"))
    assert all(row["R@1 significant"] for row in by_entry["cls-cd"])
    assert "differs significantly from w/o L_cd" in rows["caption"]
    text = run("--suite", "rope-sim", "--table", "1", "--significance", "--format", "latex")
    assert r"$^{\dagger}$" in text


def test_ci_cells_are_the_per_query_bootstrap_intervals():
    import pyarrow.parquet as pq

    document = json.loads(run("--suite", "rope-sim", "--table", "2", "--ci", "--format", "json"))
    stored = task_intervals(pq.read_table(ROOT / "leaderboards" / "rope-sim" / "cls.per_query.parquet"))
    row = next(r for r in document["tables"][0]["rows"] if r["entry"] == "cls" and r["task"] == "V2V")
    assert (row["R@1 low"], row["R@1 high"]) == pytest.approx(stored["V2V"]["R@1"], abs=0)
    assert row["R@1 low"] <= row["R@1"] <= row["R@1 high"]
    assert "± " in run("--suite", "rope-sim", "--table", "2", "--ci", "--format", "text")


def test_published_entries_get_no_interval_and_a_suite_without_baseline_is_refused():
    text = run("--suite", "rope-test", "--table", "1", "--ci", "--format", "text")
    assert "±" not in text.split("\n", 1)[1]  # the caption explains; no cell has an interval
    result = CliRunner().invoke(cli, ["table", "--suite", "rope-test", "--significance",
                                      "--root", str(ROOT / "leaderboards")])
    assert result.exit_code == 2 and "declares no 'baseline'" in result.output


def test_identical_entries_are_never_marked(tmp_path):
    """A copy of the baseline under another name differs nowhere: no cell may be marked."""
    base = tmp_path / "repo"
    shutil.copytree(ROOT / "leaderboards", base / "leaderboards")
    shutil.copytree(ROOT / "sample_embeddings", base / "sample_embeddings")
    suite = base / "leaderboards" / "rope-sim"
    entry = json.loads((suite / "cls.json").read_text())
    entry.update(name="cls-copy", label="copy")
    (suite / "cls-copy.json").write_text(json.dumps(entry))
    spec = json.loads((suite / "suite.json").read_text())
    spec["entries"] = ["cls", "cls-copy"]
    (suite / "suite.json").write_text(json.dumps(spec))
    result = CliRunner().invoke(cli, ["table", "--suite", "rope-sim", "--table", "all", "--significance",
                                      "--format", "json", "--root", str(base / "leaderboards")])
    assert result.exit_code == 0, result.output
    rows = [row for table in json.loads(result.stdout)["tables"] for row in table["rows"]]
    assert rows and not any(value for row in rows for key, value in row.items() if key.endswith("significant"))
