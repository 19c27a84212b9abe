"""Plots: structure of the returned Figures, byte-identical files, the ``plot`` command.

No pixel baselines: a figure is checked through its artists (axes, scales, ticks, line data,
image arrays, colour limits, bar heights), which is what a reader of the plot relies on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from click.testing import CliRunner

from ropebench.cli.plot import plot
from ropebench.errors import MissingExtraError, UsageError
from ropebench.render import plots

KS = [1, 5, 10, 20, 50]


def _result(scale: float = 1.0, *, ci: bool = False) -> dict[str, Any]:
    """A results JSON with two tasks: P2V (with intervals when ``ci``) and V2V."""
    p2v: dict[str, Any] = {"n_queries": 10, "R@1": 10.0 * scale, "R@5": 30.0 * scale, "R@10": 45.0 * scale,
           "R@20": 60.0 * scale, "R@50": 80.0 * scale, "MRR@50": 20.0 * scale}
    if ci:
        p2v["ci"] = {f"R@{k}": [p2v[f"R@{k}"] - 2.0, p2v[f"R@{k}"] + 2.0] for k in KS}
    v2v = {"n_queries": 10, "R@1": 50.0, "R@5": 70.0, "R@10": 75.0, "R@20": 90.0, "R@50": 95.0, "MRR@50": 60.0}
    return {"schema": "ropebench.results/1", "protocol": {"metric": "cosine", "ties": "expected", "ks": KS},
            "submission": {"path": f"runs/model{scale:g}.parquet"}, "tasks": {"V2V": v2v, "P2V": p2v}}


def _x(artist: Any) -> list[float]:
    """x data of a line (matplotlib's stubs type it loosely)."""
    return [float(v) for v in np.asarray(artist.get_xdata())]


def _y(artist: Any) -> list[float]:
    return [float(v) for v in np.asarray(artist.get_ydata())]


def _heights(axes: Any) -> list[float]:
    return [float(bar.get_height()) for bar in axes.patches]


def _labelled(axes: Any) -> dict[str, Any]:
    """Lines with a legend label (matplotlib names unlabelled artists ``_child0`` …)."""
    return {line.get_label(): line for line in axes.get_lines() if not line.get_label().startswith("_")}


class _ResultObject:
    """Stands for an EvaluationResult: only ``to_json()`` matters to the plots."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def to_json(self) -> dict[str, Any]:
        return self.document


def test_importing_plots_does_not_import_matplotlib() -> None:
    code = "import sys, ropebench.render.plots; print('matplotlib' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def test_curves_one_panel_per_task_log_axis_ticks_at_ks_and_values() -> None:
    first, second = _result(ci=True), _result(0.5)
    figure = plots.curves([first, _ResultObject(second)], labels=["A", "B"])
    assert [axes.get_title() for axes in figure.axes] == ["P2V", "V2V"]  # protocol order, not file order
    for axes in figure.axes:
        assert axes.get_xscale() == "log"
        assert list(axes.get_xticks()) == KS
        assert [text.get_text() for text in axes.get_xticklabels()] == ["1", "5", "10", "20", "50"]
        assert len(axes.get_lines()) == 2
    p2v = figure.axes[0]
    assert _x(p2v.get_lines()[0]) == KS
    assert _y(p2v.get_lines()[0]) == [first["tasks"]["P2V"][f"R@{k}"] for k in KS]
    assert _y(p2v.get_lines()[1]) == [second["tasks"]["P2V"][f"R@{k}"] for k in KS]
    legend = p2v.get_legend()
    assert legend is not None and [text.get_text() for text in legend.get_texts()] == ["A", "B"]
    # One band, for the one task that carries intervals; its edges are the interval's ends.
    assert len(p2v.collections) == 1 and len(figure.axes[1].collections) == 0
    band = np.asarray(p2v.collections[0].get_paths()[0].vertices)
    assert band[:, 1].min() == pytest.approx(first["tasks"]["P2V"]["R@1"] - 2.0)
    assert band[:, 1].max() == pytest.approx(first["tasks"]["P2V"]["R@50"] + 2.0)


def test_curves_single_result_has_no_legend_and_refuses_unknown_task() -> None:
    figure = plots.curves(_result(), tasks=["V2V"])
    assert len(figure.axes) == 1 and figure.axes[0].get_legend() is None
    with pytest.raises(UsageError, match="L2L"):
        plots.curves(_result(), tasks=["L2L"])


def test_matrix_array_colour_limits_and_annotations() -> None:
    result = _result()
    result["tasks"]["P2L"] = {"R@1": 67.789, "R@10": 90.0}
    figure = plots.matrix(result, measure="R@1")
    axes = figure.axes[0]
    array: np.ndarray = np.ma.filled(np.ma.asarray(axes.images[0].get_array()), np.nan)
    expected = np.full((3, 3), np.nan)
    expected[0, 1], expected[0, 2], expected[1, 1] = 10.0, 67.789, 50.0  # P2V, P2L, V2V
    np.testing.assert_array_equal(array, expected)
    assert axes.images[0].get_clim() == (0, 100)
    texts = sorted(text.get_text() for text in axes.texts)
    assert texts == sorted(["10.00", "67.79", "50.00"] + ["–"] * 6)
    assert len(figure.axes) == 2  # heatmap and colour bar
    with pytest.raises(UsageError, match="no R@3 value"):
        plots.matrix(result, measure="R@3")


def _per_query() -> dict[str, np.ndarray]:
    # P2V: ranks a+1 = 1, 1, 3, 6, 50, and one censored (a = 50 = max K): groups
    # "1": 2, "2–5": 1, "6–10": 1, "11–20": 0, "21–50": 1, ">50": 1 of 6 queries.
    # L2L: ranks 1 and 51 (not marked censored, but beyond max K: overflow too).
    return {"task": np.array(["P2V"] * 6 + ["L2L"] * 2),
            "a": np.array([0, 0, 2, 5, 49, 50, 0, 50]),
            "t": np.zeros(8, dtype=np.int64), "p": np.ones(8, dtype=np.int64),
            "censored": np.array([False] * 5 + [True] + [False, False]),
            "R@1": np.zeros(8), "R@50": np.zeros(8)}


@pytest.mark.parametrize("kind", ["dict", "pyarrow", "pandas"])
def test_difficulty_groups_ranks_by_k_with_an_overflow_bin(kind: str) -> None:
    columns = _per_query()
    if kind == "pyarrow":
        import pyarrow as pa

        table: Any = pa.table(columns)
    elif kind == "pandas":
        import pandas as pd

        table = pd.DataFrame(columns)
    else:
        table = columns
    figure = plots.difficulty(table, ks=KS)
    assert [axes.get_title() for axes in figure.axes] == ["P2V (6 queries)", "L2L (2 queries)"]
    p2v, l2l = (_heights(axes) for axes in figure.axes)
    assert p2v == pytest.approx([100 * n / 6 for n in (2, 1, 1, 0, 1, 1)])
    assert l2l == pytest.approx([50, 0, 0, 0, 0, 50])
    labels = [text.get_text() for text in figure.axes[0].get_xticklabels()]
    assert labels == ["1", "2–5", "6–10", "11–20", "21–50", ">50"]


def test_difficulty_takes_ks_from_measure_columns_and_names_missing_columns() -> None:
    columns = _per_query()  # R@1 and R@50 columns: groups 1, 2–50, >50
    figure = plots.difficulty(columns)
    assert _heights(figure.axes[0]) == pytest.approx([100 * 2 / 6, 300 / 6, 100 / 6])
    with pytest.raises(UsageError, match="beyond the run's max K .50."):
        plots.difficulty(columns, ks=[1, 10, 100])  # the censored query may rank 51 or 5000
    del columns["censored"]
    assert len(plots.difficulty(columns, ks=[1, 10, 100]).axes[0].patches) == 4
    with pytest.raises(UsageError, match="lacks column.*a"):
        plots.difficulty({"task": columns["task"]})


def _comparison() -> dict[str, Any]:
    cells = [{"task": task, "measure": measure, "a": 0.0, "b": 0.0, "delta": delta, "ci": [delta - 1, delta + 1],
              "p": 0.01, "p_holm": 0.02, "significant": significant}
             for task, measure, delta, significant in [("P2V", "R@1", 3.0, True), ("V2P", "R@1", -0.5, False),
                                                       ("P2V", "R@10", 1.0, False), ("V2P", "R@10", -4.0, True)]]
    return {"schema": "ropebench.comparison/1", "a": {"path": "a.json"}, "b": {"path": "b.json"},
            "primary": {"hypothesis": "cross/R@1", "a": 0.0, "b": 0.0, "delta": 1.25, "ci": [0.5, 2.0],
                        "p": 0.001, "significant": True},
            "cells": cells}


def test_compare_primary_first_and_significant_cells_marked() -> None:
    figure = plots.compare(_comparison())
    r1, r10 = figure.axes
    assert [r1.get_title(), r10.get_title()] == ["R@1", "R@10"]
    assert [text.get_text() for text in r1.get_yticklabels()] == ["cross/R@1 (primary)", "P2V", "V2P"]
    assert r1.get_ylim()[0] > r1.get_ylim()[1]  # inverted: the primary row on top
    lines = _labelled(r1)
    assert _x(lines["significant"]) == [1.25, 3.0]  # primary (row 0) and P2V
    assert _y(lines["significant"]) == [0, 1]
    assert _x(lines["not significant"]) == [-0.5]
    assert _x(_labelled(r10)["significant"]) == [-4.0]  # no primary row in R@10's panel
    # One legend for the figure, naming both markers although the R@10 panel shows one first.
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["significant", "not significant"]
    intervals: Any = r1.collections[0]
    intervals = intervals.get_segments()
    assert [list(segment[:, 0]) for segment in intervals] == [[0.5, 2.0], [2.0, 4.0], [-1.5, 0.5]]
    with pytest.raises(UsageError, match="comparison/1"):
        plots.compare(_result())


def test_distractors_against_catalogue_size() -> None:
    curve = {"sizes": [0, 1000, 100000], "tasks": {"P2V": {"R@1": [80.0, 60.0, 30.0], "R@10": [95.0, 90.0, 70.0]}}}
    figure = plots.distractors(curve)
    (axes,) = figure.axes
    assert axes.get_xscale() == "symlog"  # 0 distractors must show
    assert list(axes.get_xticks()) == [0, 1000, 100000]
    assert [text.get_text() for text in axes.get_xticklabels()] == ["0", "1k", "100k"]
    assert [_y(line) for line in axes.get_lines()] == [[80.0, 60.0, 30.0], [95.0, 90.0, 70.0]]
    assert plots.distractors(curve, measures=["R@10"]).axes[0].get_lines()[0].get_label() == "R@10"
    # A result evaluated with distractors carries the curve as ``distractor_curve``.
    two = plots.distractors([{**_result(), "distractor_curve": curve}, {**_result(0.5), "distractor_curve": curve}],
                            measures=["R@1"])
    assert [line.get_label() for line in two.axes[0].get_lines()] == ["model1 R@1", "model0.5 R@1"]
    with pytest.raises(UsageError, match="no distractor curve"):
        plots.distractors(_result())
    with pytest.raises(UsageError, match="2 values for 3 sizes"):
        plots.distractors({"sizes": [0, 1, 2], "tasks": {"P2V": {"R@1": [1.0, 2.0]}}})


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_same_input_gives_the_same_bytes(tmp_path: Path, fmt: str) -> None:
    # Two figures built separately: random SVG ids or a timestamp would differ between them.
    first = plots.save(plots.curves(_result(ci=True)), tmp_path / "one", (fmt,))
    second = plots.save(plots.curves(_result(ci=True)), tmp_path / "two", (fmt,))
    assert first == [tmp_path / f"one.{fmt}"]
    data = first[0].read_bytes()
    assert len(data) > 1000 and data == second[0].read_bytes()
    assert b"Matplotlib v" not in data and b"<dc:date>" not in data


def test_save_writes_pdf_and_refuses_unknown_formats(tmp_path: Path) -> None:
    (path,) = plots.save(plots.matrix(_result()), tmp_path / "m", ("pdf",))
    assert path.read_bytes().startswith(b"%PDF") and b"CreationDate" not in path.read_bytes()
    with pytest.raises(UsageError, match="jpeg"):
        plots.save(plots.matrix(_result()), tmp_path / "m", ("jpeg",))


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_cli_writes_every_format_and_prints_the_paths(tmp_path: Path) -> None:
    one, two = _write(tmp_path / "one.json", _result()), _write(tmp_path / "two.json", _result(0.5))
    out = tmp_path / "figures"
    result = CliRunner().invoke(plot, [str(one), str(two), "--kind", "curves", "--out", str(out),
                                       "--format", "png,svg"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(out / "curves.png"), str(out / "curves.svg")]
    assert (out / "curves.svg").read_bytes().startswith(b"<?xml")
    result = CliRunner().invoke(plot, [str(one), str(two), "--kind", "matrix", "--out", str(out),
                                       "--measure", "R@10"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(out / "matrix-one.png"), str(out / "matrix-two.png")]


def test_cli_difficulty_from_parquet_and_from_results_pointing_at_it(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(_per_query()), tmp_path / "q.parquet")
    results = _write(tmp_path / "run.json", {**_result(), "per_query": {"path": "q.parquet"}})
    for source in (tmp_path / "q.parquet", results):
        result = CliRunner().invoke(plot, [str(source), "--kind", "difficulty", "--out", str(tmp_path / "f")])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [str(tmp_path / "f" / f"difficulty-{source.stem}.png")]
    bare = _write(tmp_path / "bare.json", _result())
    result = CliRunner().invoke(plot, [str(bare), "--kind", "difficulty", "--out", str(tmp_path / "f")])
    assert "--per-query" in str(result.exception)


def test_cli_compare_and_bad_input(tmp_path: Path) -> None:
    comparison = _write(tmp_path / "c.json", _comparison())
    result = CliRunner().invoke(plot, [str(comparison), "--kind", "compare", "--out", str(tmp_path)])
    assert result.exit_code == 0 and result.output.splitlines() == [str(tmp_path / "compare-c.png")]
    result = CliRunner().invoke(plot, [str(comparison), "--kind", "curves", "--out", str(tmp_path)])
    assert "ropebench.results/1" in str(result.exception)
    result = CliRunner().invoke(plot, [str(comparison), "--kind", "compare", "--out", str(tmp_path),
                                       "--format", "gif"])
    assert isinstance(result.exception, UsageError) and "png,svg,pdf" in str(result.exception)


def test_without_matplotlib_one_line_with_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'ropebench\[plot\]'"):
        plots.curves(_result())
    source = _write(tmp_path / "r.json", _result())
    result = CliRunner().invoke(plot, [str(source), "--kind", "matrix", "--out", str(tmp_path / "f")])
    assert isinstance(result.exception, MissingExtraError)
    assert not (tmp_path / "f").exists()
    # Through the main group, the error is one line on stderr and exit code 2.
    import click

    from ropebench import cli as cli_module

    group_class = getattr(cli_module, "RopebenchGroup", None)
    if group_class is None:
        pytest.skip("ropebench.cli has no RopebenchGroup to run the command under")
    group = group_class(name="ropebench")
    assert isinstance(group, click.Group)
    group.add_command(plot)
    result = CliRunner().invoke(group, ["plot", str(source), "--kind", "matrix", "--out", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: plots need matplotlib: pip install 'ropebench[plot]'"
