"""Commands ``ropebench table`` and ``ropebench leaderboard add|verify|render|list``.

A thin adapter over :mod:`ropebench.leaderboard` and :mod:`ropebench.tables`; registered on the
main group by :mod:`ropebench.cli`. Tables and reports go to stdout, messages to stderr. Bad
input raises :class:`~ropebench.errors.RopebenchError` (the main group prints it and exits 2); a
failed ``verify`` exits 1.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ropebench import leaderboard as lb
from ropebench.entry_schema import ENTRY_SCHEMA, check_entry
from ropebench.errors import DataError, UsageError
from ropebench.results import RESULTS_SCHEMA
from ropebench.tables import FORMATS, render

__all__ = ["table", "leaderboard"]

_METRIC_KEY = re.compile(r"^(R|MRR)@[1-9][0-9]*$")


def _root_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--root", type=click.Path(file_okay=False), default=None,
        help="The leaderboards/ directory [default: ./leaderboards if present, else the copy "
             "shipped with ropebench].")(command)


def _results_entry(path: Path) -> dict[str, Any]:
    """An entry-like dict from a results file (or an entry file) given to --entry."""
    data = lb.read_json(path)
    if isinstance(data, dict) and data.get("schema") == ENTRY_SCHEMA:
        problems = check_entry(data)
        if problems:
            raise DataError(f"--entry {path}: not a valid leaderboard entry:\n  - " + "\n  - ".join(problems))
        return data
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA \
            or not isinstance(data.get("tasks"), dict):
        raise UsageError(f"--entry {path}: neither a results file ({RESULTS_SCHEMA}) nor a "
                         f"leaderboard entry ({ENTRY_SCHEMA})")
    bad = [task for task, cells in data["tasks"].items()
           if not isinstance(cells, dict)
           or not all(v is None or isinstance(v, (int, float)) for v in cells.values())]
    if bad:
        raise DataError(f"--entry {path}: tasks {', '.join(map(str, bad))} are not objects of numbers "
                        "(write results with `ropebench evaluate SUB --out results.json`)")
    return {"name": path.stem, "label": path.stem, "results": data["tasks"]}


@click.command("table")
@click.option("--suite", default="rope-test", show_default=True, help="Leaderboard suite.")
@click.option("--table", "which", type=click.Choice(["1", "2", "matrix", "all"]), default="all",
              show_default=True, help="Table 1 (cross-domain), Table 2 (intra-domain), the 3×3 "
              "domain matrix, or tables 1 and 2.")
@click.option("--entry", default=None, metavar="NAME|RESULTS.json",
              help="Only this entry of the suite, or a results file given directly (the matrix "
                   "shows every entry of the suite without it).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown",
              show_default=True, help="Output format; csv and json carry unrounded values.")
@click.option("--highlight", is_flag=True,
              help="Bold the best value per column (within each task); not for csv/json.")
@click.option("--metric", default="R@1", show_default=True, help="Metric of the matrix.")
@_root_option
def table(suite: str, which: str, entry: str | None, fmt: str, highlight: bool, metric: str,
          root: str | None) -> None:
    """Render the paper's tables from leaderboard entries.

    Table 1 holds the six cross-domain tasks (one row per entry within each task), Table 2 the
    intra-domain tasks; numbers are rounded to two decimals only here.

    \b
    Example:
        ropebench table --format markdown
        ropebench table --table 1 --format latex --highlight > table1.tex
        ropebench table --suite rope-sim --table matrix --entry cls-cd --metric R@10
        ropebench table --table matrix --entry results.json --format text
    """
    if not _METRIC_KEY.match(metric):
        raise UsageError(f"--metric {metric!r}: use a canonical metric key such as R@1 or MRR@50")
    if entry is not None and (entry.endswith(".json") or Path(entry).is_file()):
        found = _results_entry(Path(entry))
        chosen = lb.Suite(found["name"], Path(entry).parent,
                          {"title": entry, "label_column": "label"}, (found,))
    else:
        chosen = lb.load_suite(lb.find_root(root), suite)
        if entry is not None:
            chosen = dataclasses.replace(chosen, entries=(chosen.entry(entry),))
    if which == "matrix":
        tables = [lb.entry_matrix(chosen, e, metric) for e in chosen.entries]
        if all(value is None for t in tables for row in t.rows for value in row.values):
            raise UsageError(f"--metric {metric}: no entry reports it")
    else:
        tables = lb.suite_tables(chosen, which)
    if not tables:
        raise UsageError(f"nothing to show: no entry has the tasks of table {which}")
    title = f"ropebench: {chosen.spec['title']} ({chosen.name})"
    click.echo(render(tables, fmt, highlight=highlight, title=title), nl=False)


@click.group("leaderboard")
def leaderboard() -> None:
    """Add entries to the leaderboard, verify it, re-render it.

    Entries live in leaderboards/<suite>/<entry>.json (see leaderboards/README.md).

    \b
    Example:
        ropebench leaderboard list
        ropebench leaderboard verify
    """


@leaderboard.command("add")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--suite", required=True, help="Suite to add to, e.g. rope-sim.")
@click.option("--name", required=True, help="Entry name (file name): lower-case, digits, .-_")
@click.option("--label", required=True, help="Row label in the tables, e.g. 'w L_cd'.")
@click.option("--label-latex", default=None, help="Row label in LaTeX tables.")
@click.option("--description", default="", help="One sentence on the model.")
@click.option("--source", default=None, help="Paper, URL or commit [default: ropebench version].")
@click.option("--submission", default=None, type=click.Path(dir_okay=True),
              help="The submission, when the path recorded in RESULTS is not valid here.")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False),
              help="The manifest, when the path recorded in RESULTS is not valid here.")
@click.option("--force", is_flag=True, help="Replace an existing entry of that name.")
@_root_option
def add(results: str, suite: str, name: str, label: str, label_latex: str | None,
        description: str, source: str | None, submission: str | None, manifest: str | None,
        force: bool, root: str | None) -> None:
    """Add a computed entry from a results file written by `ropebench evaluate --out`.

    Refused, naming the field, when the protocol differs from the suite's (metric, ties, ks,
    approximate search, another manifest), when a referenced file changed since evaluation or
    lies outside the repository, or when the entry exists (unless --force). Records the files'
    sha256, writes atomically and re-renders the suite's block of leaderboards/README.md.

    \b
    Example:
        ropebench evaluate sample_embeddings/cls_cd.parquet \\
            --manifest sample_embeddings/manifest.parquet --out cls_cd.json
        ropebench leaderboard add cls_cd.json --suite rope-sim --name cls-cd --label 'w L_cd'
    """
    root_dir = lb.find_root(root)
    path = lb.add_entry(results, root=root_dir, suite=suite, name=name, label=label,
                        description=description, source=source, label_latex=label_latex,
                        submission=submission, manifest=manifest, force=force)
    click.echo(f"added {suite}/{name}: {path}; re-rendered {root_dir / lb.README}", err=True)


@leaderboard.command("verify")
@click.option("--suite", "suites", multiple=True, help="Only this suite (repeatable).")
@_root_option
def verify(suites: tuple[str, ...], root: str | None) -> None:
    """Check every entry; re-evaluate computed ones; compare the rendered leaderboard.

    Schema of every entry; for computed entries the files' sha256 and a re-evaluation that must
    reproduce every stored cell within one query's worth (100/n_queries percentage points) and
    every count exactly; published entries are schema-checked only. Lists every problem and
    exits 1 if there is any.

    \b
    Example:
        ropebench leaderboard verify
        ropebench leaderboard verify --suite rope-sim
    """
    report = lb.verify(lb.find_root(root), list(suites) or None)
    if report.ok:
        click.echo(report.summary())
        return
    for problem in report.problems:
        click.echo(problem)
    click.echo(f"verify failed: {len(report.problems)} problem(s)", err=True)
    raise SystemExit(1)


@leaderboard.command("render")
@click.option("--suite", "suites", multiple=True, help="Only this suite (repeatable).")
@_root_option
def render_command(suites: tuple[str, ...], root: str | None) -> None:
    """Rewrite the generated leaderboard blocks of leaderboards/README.md.

    Needed after editing an entry by hand; `add` does it by itself.

    \b
    Example:
        ropebench leaderboard render
    """
    path = lb.render_readme(lb.find_root(root), list(suites) or None)
    click.echo(f"rendered {path}", err=True)


@leaderboard.command("list")
@_root_option
def list_command(root: str | None) -> None:
    """List suites and their entries (suite, entry, kind, label, tasks).

    \b
    Example:
        ropebench leaderboard list
    """
    root_dir = lb.find_root(root)
    for name in lb.suite_names(root_dir):
        for entry in lb.load_suite(root_dir, name).entries:
            click.echo("\t".join([name, entry["name"], entry["kind"], entry["label"],
                                  ",".join(entry["results"])]))
