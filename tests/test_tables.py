"""Rendering of Table 1, Table 2 and the domain matrix (ropebench.tables, `ropebench table`).

Golden files under tests/golden/ are the committed expected output; refresh them on purpose with
ROPEBENCH_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ropebench.cli.table import table
from ropebench.errors import UsageError
from ropebench.render.numbers import format_number
from ropebench.render.table_formats import render
from ropebench.render.tables import FORMATS, matrix_table, task_table

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "leaderboards"
GOLDEN = Path(__file__).parent / "golden"
PAPER = Path(__file__).parent / "data" / "paper_tables.csv"  # copy of shared/reference
EXTENSIONS = {"markdown": "md", "latex": "tex", "csv": "csv", "html": "html", "json": "json",
              "text": "txt"}


def run_table(*args: str) -> str:
    result = CliRunner().invoke(table, ["--root", str(ROOT), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ROPEBENCH_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with ROPEBENCH_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["1", "2"])
def test_rope_test_tables_match_golden(which: str, fmt: str) -> None:
    check_golden(f"rope-test_table{which}.{EXTENSIONS[fmt]}",
                 run_table("--table", which, "--format", fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_matrix_matches_golden(fmt: str) -> None:
    # The w L_cd entry has only the six cross tasks: the diagonal is empty.
    check_golden(f"rope-test_matrix.{EXTENSIONS[fmt]}",
                 run_table("--table", "matrix", "--entry", "paper-cls-cd", "--format", fmt))


@pytest.mark.parametrize("fmt", ["markdown", "latex", "html", "text"])
def test_highlight_matches_golden(fmt: str) -> None:
    check_golden(f"rope-test_table1_highlight.{EXTENSIONS[fmt]}",
                 run_table("--table", "1", "--format", fmt, "--highlight"))


def markdown_rows(text: str) -> list[list[str]]:
    """Body rows of every pipe table in ``text``: each table's header and rule lines dropped."""
    rows, position = [], 0  # position: index of the line within the current pipe table
    for line in text.splitlines():
        position = position + 1 if line.startswith("|") else 0
        if position > 2:
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_markdown_rows_equal_paper_tables_csv() -> None:
    text = run_table("--format", "markdown")
    with open(PAPER, newline="") as handle:
        paper = list(csv.DictReader(handle))
    rows = markdown_rows(text)
    table1 = [r for r in paper if r["table"] == "1"]
    table2 = [r for r in paper if r["table"] == "2"]
    metrics = ["R@1", "R@5", "R@10", "R@20", "R@50"]
    expected = ([[r["task"], r["loss"], *(r[m] for m in metrics)] for r in table1]
                + [[r["task"], *(r[m] for m in metrics)] for r in table2])
    assert rows == expected
    assert "| tasks | loss     |   R@1 |" in text  # Table 1 header, label column named loss
    assert "| tasks |   R@1 |" in text  # Table 2 without the loss column (one model)
    assert "Retrieval results with/without cross domain loss" in text
    assert "Retrieval results with only classification loss on intra-domain tasks." in text


def test_csv_and_json_carry_unrounded_values() -> None:
    entries = [{"name": "a", "label": "A", "results": {"P2V": {"R@1": 12.345678, "R@5": 50.0}}},
               {"name": "b", "label": "B", "results": {"P2V": {"R@1": 1 / 3}}}]
    tables = [task_table(entries, "1", metrics=("R@1", "R@5"))]
    rows = list(csv.DictReader(io.StringIO(render(tables, "csv"))))
    assert rows[0] == {"table": "1", "task": "P2V", "entry": "a", "label": "A",
                       "R@1": "12.345678", "R@5": "50.0"}
    assert float(rows[1]["R@1"]) == 1 / 3 and rows[1]["R@5"] == ""
    document = json.loads(render(tables, "json"))
    assert document["tables"][0]["rows"][1]["R@1"] == 1 / 3
    assert document["tables"][0]["rows"][1]["R@5"] is None
    assert "12.35" in render(tables, "markdown") and "12.345678" not in render(tables, "markdown")


def test_rounding_is_two_decimals_and_missing_is_a_dash() -> None:
    assert format_number(65.2) == "65.20"
    assert format_number(100.0) == "100.00"
    assert format_number(0.0) == "0.00"
    assert format_number(3.14159) == "3.14"
    assert format_number(None) == "–"


def test_label_column_shown_only_when_several_entries_have_rows() -> None:
    one = [{"name": "a", "label": "A", "results": {"P2P": {"R@1": 1.0}}}]
    two = one + [{"name": "b", "label": "B", "results": {"P2P": {"R@1": 2.0}}}]
    assert task_table(one, "2", label_column="loss").label_header is None
    assert task_table(two, "2", label_column="loss").label_header == "loss"
    # csv keeps the label field either way: machines need it
    assert "loss" in render([task_table(one, "2", label_column="loss")], "csv").splitlines()[0]


def test_rows_follow_task_order_then_entry_order() -> None:
    entries = [{"name": "b", "label": "B", "results": {"L2V": {"R@1": 1.0}, "P2V": {"R@1": 2.0}}},
               {"name": "a", "label": "A", "results": {"P2V": {"R@1": 3.0}}}]
    rows = [(row.group, row.entry) for row in task_table(entries, "1").rows]
    assert rows == [("P2V", "b"), ("P2V", "a"), ("L2V", "b")]


def test_highlight_bolds_best_within_each_task_only_when_asked() -> None:
    entries = [{"name": "a", "label": "A", "results": {"P2V": {"R@1": 10.0}, "V2P": {"R@1": 5.0}}},
               {"name": "b", "label": "B", "results": {"P2V": {"R@1": 20.0}, "V2P": {"R@1": 1.0}}}]
    tables = [task_table(entries, "1", metrics=("R@1",))]
    plain = render(tables, "markdown")
    assert "**10.00**" not in plain and "**20.00**" not in plain
    marked = render(tables, "markdown", highlight=True)
    # best per column within a task: 20 in P2V, 5 in V2P (lower than 10, still the task's best)
    assert "**20.00**" in marked and "**5.00**" in marked
    assert "**10.00**" not in marked and "**1.00**" not in marked
    assert "\\textbf{20.00}" in render(tables, "latex", highlight=True)
    assert "<strong>20.00</strong>" in render(tables, "html", highlight=True)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_highlight_refused_for_machine_formats(fmt: str) -> None:
    tables = [task_table([{"name": "a", "label": "A", "results": {"P2V": {"R@1": 1.0}}}], "1")]
    with pytest.raises(UsageError, match="highlight"):
        render(tables, fmt, highlight=True)


def test_html_is_a_standalone_page_with_all_text_escaped() -> None:
    entries = [{"name": "x", "label": "<script>alert(1)</script>",
                "results": {"P2V": {"R@1": 1.0}}},
               {"name": "y", "label": "a & b", "results": {"P2V": {"R@1": 2.0}}}]
    page = render([task_table(entries, "1", caption="R&D <test>")], "html", title="t<i>")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "a &amp; b" in page and "R&amp;D &lt;test&gt;" in page and "t&lt;i&gt;" in page


def test_latex_escapes_plain_labels_and_uses_latex_labels() -> None:
    entries = [{"name": "a", "label": "w/o L_cd", "label_latex": r"w/o $\mathcal{L}_{cd}$",
                "results": {"P2V": {"R@1": 1.0}}},
               {"name": "b", "label": "50% & more_x", "results": {"P2V": {"R@1": 2.0}}}]
    text = render([task_table(entries, "1")], "latex")
    assert r"w/o $\mathcal{L}_{cd}$" in text
    assert r"50\% \& more\_x" in text
    assert r"\multirow{2}{*}{P2V}" in text and r"\toprule" in text and r"\bottomrule" in text


def test_markdown_escapes_pipes_in_labels() -> None:
    entries = [{"name": "a", "label": "a|b", "results": {"P2V": {"R@1": 1.0}}},
               {"name": "b", "label": "c", "results": {"P2V": {"R@1": 2.0}}}]
    assert "a\\|b" in render([task_table(entries, "1")], "markdown")


def test_matrix_places_tasks_by_query_and_gallery_domain() -> None:
    results = {"P2V": {"R@1": 1.0}, "V2P": {"R@1": 2.0}, "L2L": {"R@1": 3.0}}
    matrix = matrix_table(results, metric="R@1", entry="e", label="E")
    values = {row.group: row.values for row in matrix.rows}
    assert values == {"P": (None, 1.0, None), "V": (2.0, None, None), "L": (None, None, 3.0)}


def test_table_from_a_results_file(tmp_path: Path) -> None:
    results = {"schema": "ropebench.results/1", "tasks": {
        "P2V": {"n_queries": 3, "R@1": 100 / 3, "R@5": 50.0},
        "P2P": {"n_queries": 3, "R@1": 2 / 3 * 100}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(results))
    text = run_table("--table", "matrix", "--entry", str(path), "--format", "text")
    assert "33.33" in text and "66.67" in text
    assert "| P2V   | 33.33 | 50.00 |" in run_table("--table", "1", "--entry", str(path))


def test_table_refuses_bad_input() -> None:
    runner = CliRunner()
    result = runner.invoke(table, ["--root", str(ROOT), "--entry", "nope"])
    assert isinstance(result.exception, UsageError) and "no entry 'nope'" in str(result.exception)
    result = runner.invoke(table, ["--root", str(ROOT), "--table", "matrix", "--metric", "R@3"])
    assert isinstance(result.exception, UsageError) and "R@3" in str(result.exception)
    result = runner.invoke(table, ["--root", str(ROOT), "--suite", "nope"])
    assert isinstance(result.exception, UsageError)
    assert "unknown suite 'nope'" in str(result.exception) and "rope-test" in str(result.exception)


def test_every_format_escapes_what_it_needs():
    """A label is shown as text in every format: no raw HTML in markdown, no LaTeX commands, a
    clean \\label key whatever the suite is called."""
    entries = [{"name": "a", "label": "<b>x</b>|y & 5%", "results": {"P2V": {"R@1": 1.0}}},
               {"name": "b", "label": "plain", "results": {"P2V": {"R@1": 2.0}}}]
    table = task_table(entries, "1", metrics=("R@1",), key="my suite/{v2}")
    markdown = render([table], "markdown")
    assert "&lt;b&gt;x&lt;/b&gt;\\|y & 5%" in markdown and "<b>" not in markdown
    latex = render([table], "latex")
    assert r"\textless{}b\textgreater{}x\textless{}/b\textgreater{}\textbar{}y \& 5\%" in latex
    assert r"\label{tab:my-suite--v2--table1}" in latex
    html_page = render([table], "html")
    assert "&lt;b&gt;x&lt;/b&gt;|y &amp; 5%" in html_page and "<b>x" not in html_page
