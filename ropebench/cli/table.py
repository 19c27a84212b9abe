"""``ropebench table``: the paper's tables and the 3×3 matrix from leaderboard entries or results files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from ropebench import leaderboard as lb
from ropebench.cli.common import root_option
from ropebench.errors import DataError, UsageError
from ropebench.leaderboard.schema import ENTRY_SCHEMA, check_entry
from ropebench.protocol import MEASURE_PATTERN, check_measure
from ropebench.render.table_formats import render
from ropebench.render.tables import FORMATS, fewshot_table
from ropebench.results import RESULTS_SCHEMA

__all__ = ["table"]


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
           or not all(v is None or isinstance(v, (int, float)) for k, v in cells.items() if k != "ci")]
    if bad:
        raise DataError(f"--entry {path}: tasks {', '.join(map(str, bad))} are not objects of numbers "
                        "(write results with `ropebench evaluate SUB --out results.json`)")
    return {"name": path.stem, "label": path.stem, **({"fewshot": data["fewshot"]} if data.get("fewshot") else {}),
            "ci": {task: cells.get("ci") or {} for task, cells in data["tasks"].items()},
            "results": {task: {k: v for k, v in cells.items() if k != "ci"} for task, cells in data["tasks"].items()}}


def _kind_of_run(path: Path) -> str:
    """``exact search``, ``approximate search (IVF…)``, plus ``with N distractors`` when so."""
    data = lb.read_json(path)
    protocol: dict[str, Any] = data["protocol"] if isinstance(data, dict) and isinstance(data.get("protocol"), dict) \
        else {}
    kind = "exact search"
    if protocol.get("search") == "approximate":
        index = protocol.get("index")
        factory = index.get("factory") if isinstance(index, dict) else index
        kind = f"approximate search ({factory})" if factory else "approximate search"
    distractors = data.get("distractors") if isinstance(data, dict) else None
    if isinstance(distractors, dict) and isinstance(distractors.get("n_items"), dict):
        kind += f" with {sum(v for v in distractors['n_items'].values() if isinstance(v, int)):,} distractors"
    return kind


def _mixing_notes(files: list[str]) -> list[str]:
    """A note when results files side by side were not computed alike (exact vs approximate search,
    with or without distractors): their numbers look comparable and are not."""
    kinds = {file: _kind_of_run(Path(file)) for file in files}
    if len(set(kinds.values())) < 2:
        return []
    listed = "; ".join(f"{file}: {kind}" for file, kind in kinds.items())
    return [f"these results were not computed alike ({listed}): an approximate index can miss neighbours and "
            "distractors make every task harder, so their cells are not comparable"]


@click.command("table")
@click.option("--suite", default="rope-test", show_default=True, help="Leaderboard suite.")
@click.option("--table", "which", type=click.Choice(["1", "2", "matrix", "fewshot", "all"]), default="all",
              show_default=True, help="Table 1 (cross-domain), Table 2 (intra-domain), the 3×3 "
              "domain matrix, few-shot classification (entries evaluated with --fewshot), or tables 1 and 2.")
@click.option("--entry", "entries", multiple=True, metavar="NAME|RESULTS.json",
              help="Only this entry of the suite, or a results file given directly; repeatable (the "
                   "matrix shows every entry of the suite without it).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown",
              show_default=True, help="Output format; csv and json carry unrounded values.")
@click.option("--highlight", is_flag=True,
              help="Bold the best value per column (within each task); not for csv/json.")
@click.option("--measure", "--metric", "measure", default="R@1", show_default=True,
              help="Measure of the matrix (--metric is its earlier spelling).")
@click.option("--ci", "ci", is_flag=True,
              help="Show each computed entry's numbers ± half their 95% product-level bootstrap interval.")
@click.option("--significance", is_flag=True,
              help="Mark (†) cells that differ significantly from the suite's baseline entry (paired "
                   "randomization test over products, Holm-adjusted over each table).")
@click.option("--ranks", is_flag=True,
              help="Show each computed entry's 95% rank interval among the suite's computed entries beside every "
                   "cell, as 67.79 (1–2), and a ranking by cross/R@1 with the groups that cannot be told apart "
                   "(one product-level bootstrap shared by all entries, 10,000 resamples, seed 0).")
@click.option("--metadata", "about", is_flag=True,
              help="Add a column describing each entry's model (name, parameters, d, dtype, bytes per item, "
                   "compression) and training data (zero-shot, ROPE train, other).")
@root_option
def table(suite: str, which: str, entries: tuple[str, ...], fmt: str, highlight: bool, measure: str,
          ci: bool, significance: bool, ranks: bool, about: bool, root: str | None) -> None:
    """Render the paper's tables from leaderboard entries.

    Table 1 holds the six cross-domain tasks (one row per entry within each task), Table 2 the
    intra-domain tasks; numbers are rounded to two decimals only here.

    \b
    Example:
        ropebench table --format markdown
        ropebench table --table 1 --format latex --highlight > table1.tex
        ropebench table --suite rope-sim --table matrix --entry cls-cd --measure R@10
        ropebench table --table matrix --entry results.json --format text
        ropebench table --suite rope-sim --table 1 --significance --ci
        ropebench table --suite rope-sim --ranks --format json
        ropebench table --suite rope-sim --table 1 --metadata
        ropebench table --table fewshot --entry results.json --format text
    """
    check_measure(measure)
    files = [e for e in entries if e.endswith(".json") or Path(e).is_file()]
    if files and len(files) != len(entries):
        raise UsageError("--entry: give either entry names of the suite or results files, not both")
    full = None
    if files:
        if significance or ranks:
            raise UsageError(f"{'--significance' if significance else '--ranks'} works on a suite's leaderboard "
                             "entries (their stored per-query files); for two results files use "
                             "`ropebench compare A B`")
        found = [_results_entry(Path(e)) for e in files]
        for note in _mixing_notes(files):
            click.echo(f"note: {note}", err=True)
        names = [f["name"] for f in found]
        if len(set(names)) != len(names):
            raise UsageError(f"--entry: the same file name appears twice ({', '.join(names)}); rename one copy")
        measures = [k for k in found[0]["results"].get(next(iter(found[0]["results"]), ""), {})
                    if isinstance(k, str) and MEASURE_PATTERN.match(k)]
        chosen = lb.Suite("results", Path(files[0]).parent,
                          {"title": ", ".join(files), "label_column": "label",
                           **({"metrics": measures} if measures else {})}, tuple(found))
    else:
        chosen = full = lb.load_suite(lb.find_root(root), suite)
        if entries:
            if len(set(entries)) != len(entries):
                raise UsageError("--entry: the same entry is given twice")
            chosen = dataclasses.replace(chosen, entries=tuple(chosen.entry(e) for e in entries))
    if which == "fewshot":
        if significance or ranks:
            raise UsageError(f"{'--significance' if significance else '--ranks'} is not available for --table "
                             "fewshot. Fix: compare two few-shot results with `ropebench compare A.json B.json`")
        found_table = fewshot_table(chosen.entries, label_column=chosen.label_column, ci=ci,
                                    key=chosen.name)
        if not found_table.rows:
            given = ", ".join(files) if files else f"suite {chosen.name}"
            raise UsageError(f"--table fewshot: {given} has no few-shot results (no 'fewshot' section). Fix: "
                             "evaluate with `ropebench evaluate SUB --fewshot --out results.json` and pass "
                             "--entry results.json")
        if about:
            found_table = _with_metadata(found_table, {e["name"]: e for e in chosen.entries})
        title = f"ropebench: {chosen.spec['title']} ({chosen.name})"
        click.echo(render([found_table], fmt, highlight=highlight, title=title), nl=False)
        return
    if which == "matrix":
        tables = [lb.entry_matrix(chosen, e, measure) for e in chosen.entries]
        if all(value is None for t in tables for row in t.rows for value in row.values):
            raise UsageError(f"--measure {measure}: no entry reports it")
    else:
        tables = lb.suite_tables(chosen, which)
    if not tables:
        raise UsageError(f"nothing to show: no entry has the tasks of table {which}")
    if (ci or significance) and which != "matrix":
        if full is not None:
            from ropebench.leaderboard.significance import annotate

            base = lb.find_root(root).resolve().parent
            tables, _ = annotate(full, tables, base=base, ci=ci, significance=significance)
        else:
            tables = [_with_stored_intervals(t, {e["name"]: e.get("ci") or {} for e in chosen.entries})
                      for t in tables]
    if about and which != "matrix":
        tables = [_with_metadata(t, {e["name"]: e for e in chosen.entries}) for t in tables]
    extra = None
    if ranks and which != "matrix" and full is not None:
        tables, extra = _with_ranks(full, tables, base=lb.find_root(root).resolve().parent,
                                    ranking_table=which in ("1", "all"))
    title = f"ropebench: {chosen.spec['title']} ({chosen.name})"
    click.echo(render(tables, fmt, highlight=highlight, title=title, extra=extra), nl=False)


def _with_metadata(table: Any, entries: dict[str, Any]) -> Any:
    """Table 1 / 2 with a ``model`` column: one line about each entry's model and training data."""
    from ropebench.leaderboard.metadata import describe

    rows = tuple(dataclasses.replace(row, tag=describe(entries.get(row.entry, {}))) for row in table.rows)
    return dataclasses.replace(table, rows=rows, tag_header="about")


def _with_ranks(suite: Any, tables: list[Any], *, base: Path, ranking_table: bool) -> tuple[list[Any], dict[str, Any]]:
    """Tables 1/2 with rank intervals (and their note in the caption), plus the ranking by cross/R@1."""
    from ropebench.leaderboard.ranking import ranks_note, ranks_table, suite_ranking, with_note, with_ranks

    ranking = suite_ranking(suite, base=base)
    note = ranks_note(ranking)
    out = [dataclasses.replace(with_ranks(t, ranking), caption=with_note(t.caption, note)) for t in tables]
    summary = ranks_table(suite, ranking, key=suite.name) if ranking_table else None
    if summary is not None:
        out.append(summary)
    return out, ranking.to_json()


def _with_stored_intervals(table: Any, intervals: dict[str, dict[str, dict[str, Any]]]) -> Any:
    """A table whose rows carry the intervals their results files stored (``tasks[T].ci``)."""
    rows = []
    for row in table.rows:
        stored = intervals.get(row.entry, {}).get(row.group, {})
        bounds = tuple(tuple(stored[m]) if stored.get(m) else None for m in table.value_headers)
        rows.append(dataclasses.replace(row, intervals=bounds if any(bounds) else None))
    return dataclasses.replace(table, rows=tuple(rows))
