"""Command ``ropebench plot``: figures from results, per-query and comparison files.

A thin adapter over :mod:`ropebench.render.plots`: it reads the files, calls one plotting
function and writes the figure in each format asked for, printing every path written on stdout.
Bad input raises :class:`~ropebench.errors.RopebenchError` (the main group prints it and exits 2).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from ropebench.errors import DataError, UsageError
from ropebench.protocol import MEASURE_PATTERN

__all__ = ["KINDS", "plot"]

KINDS: tuple[str, ...] = ("curves", "matrix", "difficulty", "compare", "distractors", "compression", "fewshot")
RESULTS_SCHEMA = "ropebench.results/1"
ENTRY_SCHEMA = "ropebench.entry/1"
COMPARISON_SCHEMA = "ropebench.comparison/1"


def _read_json(path: Path) -> dict[str, Any]:
    from ropebench.io.safety import regular_input

    regular_input(path, "input", fix="pass a results, comparison or per-query file")
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read ({error}). Fix: pass a results JSON, a comparison JSON or a "
                        "per-query parquet file") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise DataError(f"{path}: not valid JSON ({error}). Fix: pass the file ropebench wrote, unedited") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}. Fix: pass a results, "
                        "comparison or curve file ropebench wrote")
    return data


def _results(path: Path) -> dict[str, Any]:
    """A results file (or a leaderboard entry, whose ``results`` are its tasks)."""
    data = _read_json(path)
    if data.get("schema") not in (RESULTS_SCHEMA, ENTRY_SCHEMA):
        raise DataError(f"{path}: schema is {data.get('schema')!r}, expected {RESULTS_SCHEMA!r}. Fix: write one with "
                        "`ropebench evaluate SUBMISSION --out results.json`")
    tasks = data.get("tasks") if data.get("schema") == RESULTS_SCHEMA else data.get("results")
    problems = []
    if not isinstance(tasks, dict):
        problems.append(f"'{'tasks' if data.get('schema') == RESULTS_SCHEMA else 'results'}' is missing or not an "
                        "object")
    else:
        for task, cell in tasks.items():
            if not isinstance(cell, dict):
                problems.append(f"task {task!r} is not an object")
                continue
            for key, value in cell.items():
                if MEASURE_PATTERN.match(key) and value is not None and (
                        isinstance(value, bool) or not isinstance(value, (int, float))):
                    problems.append(f"tasks.{task}.{key} is {value!r}, not a number")
                if key == "ci" and value is not None and not (isinstance(value, dict) and all(
                        v is None or (isinstance(v, list) and len(v) == 2
                                      and all(x is None or isinstance(x, (int, float)) for x in v))
                        for v in value.values())):
                    problems.append(f"tasks.{task}.ci is not {{measure: [low, high]}}")
    if problems:
        raise DataError(f"{path}: malformed results file: {'; '.join(problems[:5])}"
                        + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                        + ". Fix: pass the file `ropebench evaluate --out` wrote, unedited")
    # In a legend, several files are told apart by their names unless they carry a label.
    return {"label": path.stem, **data}


def _per_query_table(path: Path) -> tuple[Any, list[int] | None]:
    """The per-query table for ``difficulty``: a parquet file, or the one a results JSON points at.

    Returns the pyarrow Table (only the columns the plot reads) and the run's Ks when known.
    """
    import pyarrow.parquet as pq

    ks = None
    if path.suffix.lower() == ".json":
        data = _read_json(path)
        ks = (data.get("protocol") or {}).get("ks")
        record: dict[str, Any] = data["per_query"] if isinstance(data.get("per_query"), dict) else {}
        recorded = record.get("path")
        if not recorded:
            raise DataError(f"{path}: the results carry no per-query file ('per_query': {{'path': …}}). Fix: "
                            "evaluate again with --out R.json (it writes R.per_query.parquet beside it; --per-query "
                            "FILE puts it elsewhere) and plot R.json")
        # Results point relative to their own directory; leaderboard entries relative to the
        # directory that holds leaderboards/ (two levels above the suite's folder).
        candidates = [path.parent / recorded, path.parent.parent.parent / recorded]
        path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
        expected = record.get("sha256")
    else:
        expected = None
    from ropebench.io.files import sha256_file
    from ropebench.io.safety import regular_input

    regular_input(path, "per-query file", fix="pass a per-query parquet file (`ropebench evaluate --out r.json` "
                  "writes r.per_query.parquet)")
    if isinstance(expected, str) and sha256_file(path) != expected:
        raise DataError(f"per-query file {path}: its sha256 differs from the one its results file records (it was "
                        "changed or replaced after the evaluation). Fix: evaluate again, or plot the results that "
                        "go with it")
    try:
        names = pq.read_schema(path).names
        wanted = [name for name in ("task", "a", "t", "p", "censored") if name in names]
        table = pq.read_table(path, columns=wanted)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable per-query parquet file ({error})") from None
    if ks is None:
        # Measure columns are R@K (older files: hit@K); their Ks group the ranks.
        found = [re.fullmatch(r"(?:R|hit)@([0-9]+)", name) for name in names]
        ks = sorted({int(match[1]) for match in found if match}) or None
    return table, ks


def _formats(text: str) -> list[str]:
    from ropebench.render.plots import FORMATS

    chosen = [item.strip().lower() for item in text.split(",") if item.strip()]
    bad = [item for item in chosen if item not in FORMATS]
    if bad or not chosen:
        raise UsageError(f"--format {text!r}: choose one or more of {','.join(FORMATS)} (e.g. png,svg)")
    return list(dict.fromkeys(chosen))


@click.command("plot")
@click.argument("inputs", metavar="RESULTS...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), required=True,
              help="curves: R@K against K (all files on one figure); matrix: 3×3 heatmap per file; "
                   "difficulty: first-hit ranks per file (per-query parquet, or results pointing at one); "
                   "compare: Δ ± CI per comparison file; distractors: R@K against catalogue size; "
                   "compression: cross/R@1 against bytes per item over results of evaluate --compress.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Directory for the figures (created if missing).")
@click.option("--format", "formats", default="png", show_default=True, help="Comma-separated: png,svg,pdf.")
@click.option("--measure", default=None,
              help="matrix: the measure shown [default: R@1]; compare, distractors: only this measure.")
def plot(inputs: tuple[Path, ...], kind: str, out: Path, formats: str, measure: str | None) -> None:
    """Draw figures from RESULTS files (results JSON, per-query parquet or comparison JSON).

    Needs the extra ropebench[plot] (matplotlib). The same input gives byte-identical files.

    \b
    Example:
      ropebench evaluate sample_embeddings/cls_cd.parquet -m sample_embeddings/manifest.parquet \\
          --out cls_cd.json --per-query cls_cd.parquet
      ropebench plot cls_cd.json --kind matrix --out figures --format png,svg
      ropebench plot cls.json cls_cd.json --kind curves --out figures
      ropebench plot cls_cd.parquet --kind difficulty --out figures
      ropebench plot cls_cd.json cls_cd-int8.json cls_cd-binary.json --kind compression --out figures
      ropebench plot fewshot.json --kind fewshot --out figures   # from evaluate --fewshot
    """
    from ropebench.cli.options import refuse_without
    from ropebench.protocol import check_measure
    from ropebench.render import plots

    refuse_without([("--measure", "measure", "--kind matrix, compare or distractors",
                     kind in ("matrix", "compare", "distractors"),
                     f"drop --measure (--kind {kind} draws every measure's curve or the first-hit ranks)")])
    plots.require_matplotlib()
    chosen = _formats(formats)
    _check_out(out, inputs)
    if measure is not None:
        check_measure(measure)
    measures = None if measure is None else [measure]
    figures: list[tuple[str, Any]] = []
    if kind == "curves":
        documents = [_results(path) for path in inputs]
        figures.append(("curves", _drawn(inputs[0] if len(inputs) == 1 else None, kind, plots.curves,
                                         documents)))
    elif kind == "compression":
        from ropebench.render.plot_compression import compression_tradeoff

        documents = [_results(path) for path in inputs]
        figures.append(("compression", _drawn(inputs[0] if len(inputs) == 1 else None, kind, compression_tradeoff,
                                              documents, measure=measure or "R@1")))
    elif kind == "fewshot":
        from ropebench.render.plot_fewshot import fewshot

        documents = [_results(path) for path in inputs]
        for path, document in zip(inputs, documents):
            if not isinstance(document.get("fewshot"), dict):
                raise UsageError(f"{path}: no few-shot results (no 'fewshot' section); nothing was drawn. Fix: "
                                 "evaluate with `ropebench evaluate SUB --fewshot --out results.json` and plot "
                                 "results.json")
        figures.append(("fewshot", _drawn(inputs[0] if len(inputs) == 1 else None, kind, fewshot, documents)))
    elif kind == "distractors":
        # Results evaluated with distractors at several sizes, or bare curves; labelled by file name.
        curves = [{"label": path.stem, **_read_json(path)} for path in inputs]
        figures.append(("distractors", _drawn(inputs[0] if len(inputs) == 1 else None, kind,
                                              plots.distractors, curves, measures=measures)))
    else:
        for path in inputs:
            if kind == "matrix":
                figure = _drawn(path, kind, plots.matrix, _results(path), measure=measure or "R@1")
            elif kind == "difficulty":
                table, ks = _per_query_table(path)
                figure = _drawn(path, kind, plots.difficulty, table, ks=ks, title=path.name)
            else:
                data = _read_json(path)
                if data.get("schema") != COMPARISON_SCHEMA:
                    raise DataError(f"{path}: schema is {data.get('schema')!r}, expected {COMPARISON_SCHEMA!r}. Fix: "
                                    "write one with `ropebench compare A B --out comparison.json`")
                figure = _drawn(path, kind, plots.compare, data, measures=measures)
            figures.append((f"{kind}-{path.stem}", figure))
    stems = [stem for stem, _ in figures]
    shared = sorted({stem for stem in stems if stems.count(stem) > 1})
    if shared:
        raise UsageError(f"two inputs share a file name ({', '.join(shared)}): their figures would "
                         "overwrite each other; plot them in separate runs")
    _write_figures(out, figures, chosen, inputs)


def _drawn(path: Path | None, kind: str, draw: Any, *args: Any, **kwargs: Any) -> Any:
    """``draw(*args, **kwargs)``, with a malformed input (a field of the wrong shape) reported, not a traceback."""
    from ropebench.errors import RopebenchError

    where = f"{path}" if path is not None else "the inputs"
    try:
        return draw(*args, **kwargs)
    except RopebenchError as error:
        if path is None or str(path) in str(error):
            raise
        raise type(error)(f"{where}: {error}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise DataError(f"{where}: cannot draw --kind {kind} from it: a field is missing or has the wrong shape "
                        f"({type(error).__name__}: {error}). Fix: pass files ropebench wrote, unedited (results: "
                        "`evaluate --out`; comparisons: `compare --out`; curves: `evaluate --distractor-sizes`)"
                        ) from None


def _figure_paths(out: Path, figures: list[tuple[str, Any]], formats: list[str]) -> list[Path]:
    return [out / f"{stem}.{fmt}" for stem, _ in figures for fmt in formats]


def _check_out(out: Path, inputs: tuple[Path, ...]) -> None:
    """--out must be a directory (or creatable as one) that can be written, before any drawing."""
    from ropebench.io.safety import unwritable_parent

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a directory. Fix: name a directory for the figures, "
                         "e.g. --out figures")
    blocked = unwritable_parent(out / "figure.png")  # the figures' directory, or the nearest that exists
    if blocked is not None:
        why = "not a directory" if blocked.exists() and not blocked.is_dir() else "not writable"
        raise UsageError(f"--out {out}: the figures cannot be written there ({blocked} is {why}); nothing was "
                         "drawn. Fix: choose a directory you can write to")


def _write_figures(out: Path, figures: list[tuple[str, Any]], formats: list[str], inputs: tuple[Path, ...]) -> None:
    """Every figure file written together (temporary files renamed at the end; all or none)."""
    from ropebench.io.files import write_files_together
    from ropebench.io.safety import check_output_paths, inputs_and_records
    from ropebench.render.plot_common import _render

    paths = _figure_paths(out, figures, formats)
    sources = inputs_and_records({f"input {number}": path for number, path in enumerate(inputs, start=1)})
    check_output_paths({str(path): path for path in paths}, sources)
    writers = []
    for (stem, figure) in figures:
        for fmt in formats:
            data = _render(figure, fmt, 150)

            def write(tmp: str, data: bytes = data) -> None:
                with open(tmp, "wb") as handle:
                    handle.write(data)

            writers.append((out / f"{stem}.{fmt}", write))
    write_files_together(writers, guard=True)  # also a single figure: a kill leaves no .tmp file
    for path in paths:
        click.echo(str(path))
