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

__all__ = ["KINDS", "plot"]

KINDS: tuple[str, ...] = ("curves", "matrix", "difficulty", "compare", "distractors", "compression")
RESULTS_SCHEMA = "ropebench.results/1"
ENTRY_SCHEMA = "ropebench.entry/1"
COMPARISON_SCHEMA = "ropebench.comparison/1"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _results(path: Path) -> dict[str, Any]:
    """A results file (or a leaderboard entry, whose ``results`` are its tasks)."""
    data = _read_json(path)
    if data.get("schema") not in (RESULTS_SCHEMA, ENTRY_SCHEMA):
        raise DataError(f"{path}: schema is {data.get('schema')!r}, expected {RESULTS_SCHEMA!r} "
                        "(write one with `ropebench evaluate SUBMISSION --out results.json`)")
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
        recorded = (data.get("per_query") or {}).get("path")
        if not recorded:
            raise DataError(f"{path}: the results carry no per-query file ('per_query': {{'path': …}}): "
                            "evaluate with --per-query FILE and plot that parquet file")
        # Results point relative to their own directory; leaderboard entries relative to the
        # directory that holds leaderboards/ (two levels above the suite's folder).
        candidates = [path.parent / recorded, path.parent.parent.parent / recorded]
        path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
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
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), required=True,
              help="curves: R@K against K (all files on one figure); matrix: 3×3 heatmap per file; "
                   "difficulty: first-hit ranks per file (per-query parquet, or results pointing at one); "
                   "compare: Δ ± CI per comparison file; distractors: R@K against catalogue size; "
                   "compression: cross/R@1 against bytes per item over results of evaluate --compress.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
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
    """
    from ropebench.protocol import check_measure
    from ropebench.render import plots

    plots.require_matplotlib()
    chosen = _formats(formats)
    if measure is not None:
        check_measure(measure)
    measures = None if measure is None else [measure]
    figures: list[tuple[str, Any]] = []
    if kind == "curves":
        figures.append(("curves", plots.curves([_results(path) for path in inputs])))
    elif kind == "compression":
        from ropebench.render.plot_compression import compression_tradeoff

        figures.append(("compression", compression_tradeoff([_results(p) for p in inputs], measure=measure or "R@1")))
    elif kind == "distractors":
        # Results evaluated with distractors at several sizes, or bare curves; labelled by file name.
        curves = [{"label": path.stem, **_read_json(path)} for path in inputs]
        figures.append(("distractors", plots.distractors(curves, measures=measures)))
    else:
        for path in inputs:
            if kind == "matrix":
                figure = plots.matrix(_results(path), measure=measure or "R@1")
            elif kind == "difficulty":
                table, ks = _per_query_table(path)
                figure = plots.difficulty(table, ks=ks, title=path.name)
            else:
                data = _read_json(path)
                if data.get("schema") != COMPARISON_SCHEMA:
                    raise DataError(f"{path}: schema is {data.get('schema')!r}, expected {COMPARISON_SCHEMA!r} "
                                    "(write one with `ropebench compare A B --out comparison.json`)")
                figure = plots.compare(data, measures=measures)
            figures.append((f"{kind}-{path.stem}", figure))
    stems = [stem for stem, _ in figures]
    shared = sorted({stem for stem in stems if stems.count(stem) > 1})
    if shared:
        raise UsageError(f"two inputs share a file name ({', '.join(shared)}): their figures would "
                         "overwrite each other; plot them in separate runs")
    out.mkdir(parents=True, exist_ok=True)
    for stem, figure in figures:
        for written in plots.save(figure, out / stem, chosen):
            click.echo(str(written))
