"""The command line as a user meets it: help, exit codes, stdout vs stderr, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ropebench import __version__
from ropebench.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_embeddings"
SUB, MAN = str(SAMPLE / "cls_cd.parquet"), str(SAMPLE / "manifest.parquet")


def all_commands(group=cli, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


def test_every_command_has_an_example_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = {path for path, _ in all_commands()}
    assert {("evaluate",), ("validate",), ("table",), ("leaderboard",), ("leaderboard", "verify")} <= names
    for path, _ in all_commands():
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output, path
        assert f"ropebench {' '.join(path)}" in readme, f"`ropebench {' '.join(path)}` is not in README.md"


def test_version_and_python_dash_m():
    assert CliRunner().invoke(cli, ["--version"]).output.strip() == f"ropebench, version {__version__}"
    done = subprocess.run([sys.executable, "-m", "ropebench", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "evaluate" in done.stdout


def test_import_is_light():
    code = ("import sys, ropebench\n"
            "print(sorted(m for m in ('torch', 'faiss', 'pyarrow', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_evaluate_writes_results_and_per_query_and_keeps_stdout_for_data(tmp_path):
    out, per_query = tmp_path / "r.json", tmp_path / "q.parquet"
    result = CliRunner().invoke(cli, ["evaluate", SUB, "--manifest", MAN, "--out", str(out), "--per-query",
                                      str(per_query), "--format", "json", "--tasks", "P2V,L2L", "--ks", "1,10"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # stdout is pure JSON: the "wrote" message went to stderr
    assert "wrote" in result.stderr
    stored = json.loads(out.read_text())
    assert printed["tasks"] == stored["tasks"]
    assert stored["schema"] == "ropebench.results/1"
    assert list(stored["tasks"]) == ["P2V", "L2L"]
    assert set(stored["tasks"]["P2V"]) == {"n_queries", "n_skipped", "n_gallery", "n_tied", "R@1", "R@10",
                                           "MRR@10", "ci"}
    low, high = stored["tasks"]["P2V"]["ci"]["R@1"]
    assert low <= stored["tasks"]["P2V"]["R@1"] <= high
    assert stored["protocol"] == {"metric": "cosine", "ties": "expected", "ks": [1, 10], "search": "exact",
                                  "scores": "float64", "group_exclusion": False}
    assert len(stored["submission"]["sha256"]) == 64 and stored["manifest"]["sha256"]
    # Only libraries that ran: the default engine never runs FAISS.
    assert {"python", "numpy", "pyarrow", "platform", "cpu", "threads", "engine"} <= set(stored["environment"])
    assert "faiss" not in stored["environment"]
    assert stored["environment"]["engine"]["name"] == "one-pass"
    assert stored["per_query"]["path"] == "q.parquet" and len(stored["per_query"]["sha256"]) == 64
    table = pq.read_table(per_query).to_pandas()
    assert list(table.columns) == ["task", "item_id", "product_id", "domain", "a", "t", "p", "censored",
                                   "R@1", "R@10", "MRR@10"]
    for task in ("P2V", "L2L"):
        rows = table[table.task == task]
        assert len(rows) == stored["tasks"][task]["n_queries"]
        for measure in ("R@1", "R@10", "MRR@10"):
            assert rows[measure].mean() == pytest.approx(stored["tasks"][task][measure], rel=1e-12)


def test_failed_evaluation_writes_nothing_and_has_no_traceback(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["evaluate", SUB, "--manifest", str(tmp_path / "nope.parquet"),
                                      "--out", str(out)])
    assert result.exit_code == 2
    assert "no such file" in result.stderr and "Traceback" not in result.output
    assert not out.exists()
    bad_option = CliRunner().invoke(cli, ["evaluate", SUB, "--manifest", MAN, "--tasks", "P2Q"])
    assert bad_option.exit_code == 2 and "unknown task" in bad_option.stderr


def test_markdown_format_is_github_tables():
    result = CliRunner().invoke(cli, ["evaluate", SUB, "--manifest", MAN, "--format", "markdown", "--tasks", "P2V"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| task "))
    assert lines[header + 1].startswith("|:-----") and lines[header + 1].endswith("-:|")
    assert lines[header + 2].startswith("| P2V ")


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read (Is a directory)"),
    ('{"schema": "ropebench.entry/1"}', "not a valid leaderboard entry"),
    ('{"schema": "ropebench.results/1", "tasks": {"P2V": 5}}', "tasks P2V are not objects of numbers"),
])
def test_table_entry_file_errors_exit_2(tmp_path, content, message):
    path = tmp_path / "entry.json"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    for table in ("1", "matrix"):
        result = CliRunner().invoke(cli, ["table", "--entry", str(path), "--table", table])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert "Traceback" not in result.output


def test_verify_unknown_suite_is_a_usage_error():
    result = CliRunner().invoke(cli, ["leaderboard", "verify", "--suite", "nope", "--root", str(ROOT / "leaderboards")])
    assert result.exit_code == 2 and "unknown suite 'nope'" in result.stderr


def test_unwritable_output_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = CliRunner().invoke(cli, ["baseline", "simulate", "--out", str(blocker / "sim"), "--products", "50"])
    assert result.exit_code == 2 and "cannot create this directory" in result.stderr
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["evaluate", SUB, "--manifest", MAN, "--tasks", "P2V",
                                      "--out", str(blocker / "r.json")])
    assert result.exit_code == 2 and "cannot create this directory" in result.stderr and not out.exists()


def test_baseline_train_checks_its_inputs_and_output_before_training(tmp_path):
    pytest.importorskip("torch")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    data = tmp_path / "garbage"
    data.mkdir()
    (data / "train.parquet").write_text("junk")
    (data / "test.parquet").write_text("junk")
    result = CliRunner().invoke(cli, ["baseline", "train", str(data), "--loss", "cls",
                                      "--out", str(blocker / "x.parquet")])
    assert result.exit_code == 2 and "cannot create this directory" in result.stderr
    result = CliRunner().invoke(cli, ["baseline", "train", str(data), "--loss", "cls",
                                      "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "cannot be read as parquet" in result.stderr


def test_evaluate_imports_neither_pandas_nor_faiss_nor_torch(tmp_path):
    """The default path needs none of them; importing them cost 0.2-0.4 s of every run."""
    code = ("import sys; from ropebench.cli import main\n"
            f"sys.argv = ['ropebench', 'evaluate', {SUB!r}, '--manifest', {MAN!r},\n"
            f"            '--out', {str(tmp_path / 'r.json')!r}]\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(sorted(m for m in ('pandas', 'faiss', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    # The provenance names the libraries that ran, and only those.
    import pyarrow

    environment = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["environment"]
    assert environment["pyarrow"] == pyarrow.__version__ and "faiss" not in environment
