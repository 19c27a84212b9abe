"""MAP@R, RP and mAP@K on every surface the first-hit measures reach: compare, table, plot and the
leaderboard schema (DESIGN §16: "the same columns in the per-query file, the same ci, compare,
tables, plots")."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ropebench.cli import cli
from ropebench.leaderboard.schema import check_entry, check_results

SAMPLE = Path(__file__).resolve().parent.parent / "sample_embeddings"
ROOT = Path(__file__).resolve().parent.parent
NEW = ("MAP@R", "RP", "mAP@10")


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("relevant")
    out = {}
    for name in ("cls_cd", "cls"):
        out[name] = base / f"{name}.json"
        result = _run("evaluate", str(SAMPLE / f"{name}.parquet"), "-m", str(SAMPLE / "manifest.parquet"),
                      "--tasks", "P2V,V2V", "--ks", "1,10", "--measures", "R@K,MRR,MAP@R,RP,mAP@10",
                      "--out", str(out[name]), "--format", "json")
        assert result.exit_code == 0, result.output
    return out


def test_compare_has_a_cell_for_every_new_measure(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    result = _run("compare", str(runs["cls_cd"]), str(runs["cls"]), "--resamples", "100", "--out", str(out))
    assert result.exit_code == 0, result.output
    cells = json.loads(out.read_text())["cells"]
    stored = json.loads(runs["cls_cd"].read_text())["tasks"]
    for task in ("P2V", "V2V"):
        got = {c["measure"]: c for c in cells if c["task"] == task}
        assert list(got) == ["R@1", "R@10", "MRR@10", *NEW]
        for measure in NEW:
            assert got[measure]["a"] == pytest.approx(stored[task][measure], abs=1e-9)
    assert "MAP@R" in result.stdout and "mAP@10" in result.stdout


def test_compare_refuses_sides_with_other_measures(runs: dict[str, Path], tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    assert _run("evaluate", str(SAMPLE / "cls.parquet"), "-m", str(SAMPLE / "manifest.parquet"), "--tasks",
                "P2V,V2V", "--ks", "1,10", "--out", str(plain), "--format", "json").exit_code == 0
    result = _run("compare", str(runs["cls_cd"]), str(plain), "--resamples", "20", "--out", str(tmp_path / "c.json"))
    assert result.exit_code == 2 and "MAP@R" in result.stderr and "Fix:" in result.stderr
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv", "html", "json", "text"])
def test_table_shows_the_new_measures_in_every_format(runs: dict[str, Path], fmt: str) -> None:
    result = _run("table", "--table", "1", "--entry", str(runs["cls_cd"]), "--entry", str(runs["cls"]),
                  "--format", fmt)
    assert result.exit_code == 0, result.output
    value = json.loads(runs["cls_cd"].read_text())["tasks"]["P2V"]["MAP@R"]
    assert "MAP@R" in result.stdout and "mAP@10" in result.stdout
    assert (repr(value) if fmt in ("csv", "json") else f"{value:.2f}") in result.stdout


def test_plots_take_the_new_measures(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = _run("plot", str(runs["cls_cd"]), "--kind", "matrix", "--measure", "MAP@R", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "matrix-cls_cd.png").is_file()


def test_results_and_entries_with_the_new_measures_pass_the_schema(runs: dict[str, Path]) -> None:
    results = json.loads(runs["cls_cd"].read_text())
    assert check_results(results) == []
    entry = json.loads((ROOT / "leaderboards" / "rope-sim" / "cls-cd.json").read_text())
    assert check_entry(entry) == []
    with_measures = copy.deepcopy(entry)
    with_measures["protocol"]["measures"] = ["R@K", "MRR", "MAP@R", "RP"]
    for cells in with_measures["results"].values():
        cells.update({"MAP@R": 40.0, "RP": 45.0})
    assert check_entry(with_measures) == []
    missing = copy.deepcopy(with_measures)
    del next(iter(missing["results"].values()))["RP"]
    assert any(p.endswith(".RP is missing") for p in check_entry(missing))
    unchosen = copy.deepcopy(entry)  # MAP@R without protocol.measures asking for it
    next(iter(unchosen["results"].values()))["MAP@R"] = 40.0
    assert any("MAP@R is not among the protocol's metrics" in p for p in check_entry(unchosen))
    bad = copy.deepcopy(with_measures)
    bad["protocol"]["measures"] = ["MAP@Q"]
    assert any("protocol.measures is ['MAP@Q']" in p for p in check_entry(bad))
