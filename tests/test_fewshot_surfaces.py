"""Few-shot classification's surfaces (docs/fewshot.md): its rows in the per-query file, `compare`
over them, `table --table fewshot` in every format, and bad input refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ropebench.cli import cli

SAMPLE = Path(__file__).resolve().parent.parent / "sample_embeddings"


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _evaluate(out: Path, submission: str = "cls_cd.parquet", *extra: str) -> Path:
    result = _run("evaluate", str(SAMPLE / submission), "-m", str(SAMPLE / "manifest.parquet"), "--tasks", "P2V",
                  "--ks", "1,5", "--out", str(out), "--format", "json", *extra)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fewshot")
    shots = ("--fewshot", "--shots", "1,2", "--draws", "2")
    return {"a": _evaluate(base / "a.json", "cls_cd.parquet", *shots),
            "b": _evaluate(base / "b.json", "cls.parquet", *shots),
            "seed1": _evaluate(base / "seed1.json", "cls.parquet", *shots, "--seed", "1"),
            "plain": _evaluate(base / "plain.json", "cls.parquet")}


def test_the_per_query_file_holds_the_fewshot_rows_after_the_retrieval_rows(runs: dict[str, Path]) -> None:
    table = pq.read_table(runs["a"].with_name("a.per_query.parquet"))
    tasks = table.column("task").to_pylist()
    first = tasks.index("P2V/1-shot") if "P2V/1-shot" in tasks else tasks.index(next(t for t in tasks if "/" in t))
    assert set(tasks[:first]) == {"P2V"} and all("-shot" in t for t in tasks[first:])
    assert table.column("acc").null_count == first and table.column("R@1").null_count == len(tasks) - first
    section = json.loads(runs["a"].read_text())["fewshot"]["tasks"]
    rows = table.slice(first).to_pylist()
    for direction, by_shots in section.items():  # each task's rows average to its number
        for shots, cells in by_shots.items():
            values = [r["acc"] for r in rows if r["task"] == f"{direction}/{shots}"]
            assert len(values) == cells["n_queries"]
            assert sum(values) / len(values) == pytest.approx(cells["acc"], abs=1e-9)


def test_compare_pairs_the_fewshot_rows_in_the_same_holm_family(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    result = _run("compare", str(runs["a"]), str(runs["b"]), "--resamples", "200", "--out", str(out))
    assert result.exit_code == 0, result.output
    cells = json.loads(out.read_text())["cells"]
    fewshot = [c for c in cells if "/" in c["task"]]
    assert {c["measure"] for c in fewshot} == {"acc", "acc@5"}
    assert [c["task"] for c in fewshot][:4] == ["P2V/1-shot", "P2V/1-shot", "P2V/2-shot", "P2V/2-shot"]
    assert all(c["delta"] > 0 and c["n_products"] > 1 for c in fewshot if c["measure"] == "acc")
    assert f"Holm-adjusted over {len(cells)} cells" in result.stdout and "V2P/2-shot" in result.stdout
    # the numbers are the results files' numbers
    stored = json.loads(runs["a"].read_text())["fewshot"]["tasks"]["V2P"]["1-shot"]["acc"]
    assert next(c["a"] for c in fewshot if c["task"] == "V2P/1-shot" and c["measure"] == "acc") == \
        pytest.approx(stored, abs=1e-9)


@pytest.mark.parametrize(("other", "says"), [("plain", "has few-shot rows"), ("seed1", "few-shot protocol")])
def test_compare_refuses_fewshot_rows_on_one_side_or_other_draws(runs: dict[str, Path], tmp_path: Path,
                                                                  other: str, says: str) -> None:
    out = tmp_path / "c.json"
    result = _run("compare", str(runs["a"]), str(runs[other]), "--resamples", "20", "--out", str(out))
    assert result.exit_code == 2, result.output
    assert says in result.stderr and "Fix:" in result.stderr and not out.exists()


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv", "html", "json", "text"])
def test_table_fewshot_in_every_format(runs: dict[str, Path], fmt: str) -> None:
    result = _run("table", "--table", "fewshot", "--entry", str(runs["a"]), "--entry", str(runs["b"]),
                  "--format", fmt)
    assert result.exit_code == 0, result.output
    section = json.loads(runs["a"].read_text())["fewshot"]["tasks"]["L2V"]["2-shot"]
    if fmt in ("csv", "json"):  # unrounded
        assert repr(section["acc"]) in result.stdout or str(section["acc"]) in result.stdout
    else:
        assert f"{section['acc']:.2f}" in result.stdout and "acc_macro".replace("_", "\\_" if fmt == "latex"
                                                                                 else "_") in result.stdout
    assert "L2V/2-shot" in result.stdout
    assert ("2 draws, seed 0" in result.stdout) == (fmt != "csv")  # csv has no caption
    if fmt == "json":
        records = json.loads(result.stdout)["tables"][0]["rows"]
        assert {r["n_ways"] for r in records if r["task"] == "L2V/2-shot"} == {section["n_ways"]}


def test_table_fewshot_with_intervals(runs: dict[str, Path]) -> None:
    result = _run("table", "--table", "fewshot", "--entry", str(runs["a"]), "--ci", "--format", "text")
    assert result.exit_code == 0, result.output
    low, high = json.loads(runs["a"].read_text())["fewshot"]["tasks"]["P2V"]["1-shot"]["ci"]["acc"]
    assert f"± {(high - low) / 2:.2f}" in result.stdout


def test_table_fewshot_refuses_results_without_fewshot(runs: dict[str, Path]) -> None:
    result = _run("table", "--table", "fewshot", "--entry", str(runs["plain"]))
    assert result.exit_code == 2 and "plain.json has no few-shot results" in result.stderr
    assert "--fewshot" in result.stderr and result.stdout == ""


def test_plot_fewshot_one_line_per_direction_against_shots(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from ropebench.render.plot_fewshot import fewshot

    data = json.loads(runs["a"].read_text())
    figure = fewshot(data)
    (axes,) = figure.axes
    handles, labels = axes.get_legend_handles_labels()  # error-bar containers (the run has intervals)
    lines = {label: getattr(handle, "lines", [handle])[0] for handle, label in zip(handles, labels)}
    assert sorted(lines) == sorted(data["fewshot"]["tasks"])
    v2p = data["fewshot"]["tasks"]["V2P"]
    assert list(lines["V2P"].get_xdata()) == [1, 2]
    assert list(lines["V2P"].get_ydata()) == pytest.approx([v2p["1-shot"]["acc"], v2p["2-shot"]["acc"]])
    result = _run("plot", str(runs["a"]), str(runs["b"]), "--kind", "fewshot", "--out", str(tmp_path / "f"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "f" / "fewshot.png") and (tmp_path / "f" / "fewshot.png").is_file()


def test_plot_fewshot_refuses_results_without_fewshot(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = _run("plot", str(runs["a"]), str(runs["plain"]), "--kind", "fewshot", "--out", str(tmp_path / "f"))
    assert result.exit_code == 2 and "plain.json: no few-shot results" in result.stderr and "Fix:" in result.stderr
    assert not (tmp_path / "f").exists()
