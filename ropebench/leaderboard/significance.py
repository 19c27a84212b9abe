"""Uncertainty in the tables: each cell's 95% interval (``table --ci``) and whether an entry
differs significantly from the suite's declared ``baseline`` entry (``table --significance``).

Both come from the per-query files that computed entries store (``<entry>.per_query.parquet``),
so no search is re-run. Published entries (numbers copied from a paper) have no per-query data:
they get neither an interval nor a mark.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ropebench.errors import DataError, UsageError
from ropebench.leaderboard.paths import check_regular, confined
from ropebench.leaderboard.store import Suite
from ropebench.render.tables import SIGNIFICANT, Table

__all__ = ["annotate", "SignificanceSettings", "per_query_of"]


@dataclasses.dataclass(frozen=True)
class SignificanceSettings:
    """How cells are tested against the baseline (``ropebench compare``'s defaults)."""

    test: str = "randomization"
    unit: str = "product"
    resamples: int = 10_000
    seed: int = 0
    alpha: float = 0.05


def per_query_of(entry: Mapping[str, Any], base: Path) -> Any:
    """The entry's stored per-query table, or None (a published entry, or no file recorded)."""
    from ropebench.results import read_per_query

    reference = entry.get("per_query")
    if entry.get("kind") != "computed" or not isinstance(reference, Mapping):
        return None
    path = confined(base / str(reference["path"]), base, f"per-query file of entry {entry['name']!r}")
    check_regular(path)
    return read_per_query(path, sha256=reference.get("sha256"))


def annotate(suite: Suite, tables: Sequence[Table], *, base: Path, ci: bool = False, significance: bool = False,
             settings: SignificanceSettings | None = None) -> tuple[list[Table], list[str]]:
    """Tables with intervals and/or significance marks, and the notes that explain them.

    Args:
        suite: the suite the tables were built from.
        tables: Table 1 / Table 2 (matrix tables are returned unchanged).
        base: the directory holding ``leaderboards/`` (entry paths are relative to it).
        ci: attach each computed entry's 95% product-level bootstrap interval.
        significance: mark cells of computed entries that differ significantly from the
            baseline, Holm-adjusted over the cells of each table.

    Raises:
        UsageError: ``significance`` on a suite that declares no baseline, or whose baseline
            has no per-query data.
    """
    from ropebench.stats import task_intervals

    settings = settings or SignificanceSettings()
    tables_out = list(tables)
    notes: list[str] = []
    per_query = {entry["name"]: per_query_of(entry, base) for entry in suite.entries}
    if ci:
        intervals = {name: task_intervals(frame) for name, frame in per_query.items() if frame is not None}
        tables_out = [_with_intervals(table, intervals) for table in tables_out]
        notes.append("± half the 95% product-level bootstrap interval (10,000 resamples, seed 0); "
                     "published entries have no per-query data and no interval.")
    if significance:
        baseline = suite.spec.get("baseline")
        if not baseline:
            raise UsageError(f"--significance: suite {suite.name!r} declares no 'baseline' entry to compare with. "
                             "Fix: add \"baseline\": \"<entry name>\" to its suite.json")
        if per_query.get(baseline) is None:
            raise UsageError(f"--significance: the baseline entry {baseline!r} of suite {suite.name!r} has no "
                             "per-query file (a published entry cannot be tested). Fix: declare a computed "
                             "entry as the baseline")
        tables_out = [_marked(table, per_query, baseline, settings) for table in tables_out]
        label = next((e["label"] for e in suite.entries if e["name"] == baseline), baseline)
        notes.append(f"{SIGNIFICANT} differs significantly from {label} (paired {settings.test} test over "
                     f"{settings.unit}s, {settings.resamples:,} resamples, seed {settings.seed}; Holm-adjusted over "
                     f"each table's cells, α = {settings.alpha}); published entries are never marked.")
    if notes:  # every format shows the caption: the note travels with the table
        tables_out = [table if table.metric is not None else
                      dataclasses.replace(table, caption=f"{table.caption} {' '.join(notes)}") for table in tables_out]
    return tables_out, notes


def _with_intervals(table: Table, intervals: Mapping[str, Mapping[str, Mapping[str, tuple[float, float]]]]) -> Table:
    """Each row's intervals, from its entry's per-query bootstrap (None where there is none)."""
    if table.metric is not None:
        return table
    rows = []
    for row in table.rows:
        cells = intervals.get(row.entry, {}).get(row.group, {})
        bounds = tuple(cells.get(measure) for measure in table.value_headers)
        rows.append(dataclasses.replace(row, intervals=bounds if any(b is not None for b in bounds) else None))
    return dataclasses.replace(table, rows=tuple(rows))


def _marked(table: Table, per_query: Mapping[str, Any], baseline: str, settings: SignificanceSettings) -> Table:
    """Mark each cell whose Holm-adjusted p (over this table's tested cells) is below alpha."""
    from ropebench.compare import compare
    from ropebench.stats import holm

    if table.metric is not None:
        return table
    comparisons = {}
    for name, frame in per_query.items():
        if name != baseline and frame is not None:
            try:
                comparisons[name] = compare(frame, per_query[baseline], unit=settings.unit, test=settings.test,
                                            resamples=settings.resamples, seed=settings.seed, alpha=settings.alpha)
            except (UsageError, DataError) as error:
                raise UsageError(f"--significance: entry {name!r} cannot be compared with the baseline "
                                 f"{baseline!r}: {error}") from None
    cells: list[tuple[int, int, float]] = []
    for i, row in enumerate(table.rows):
        found = comparisons.get(row.entry)
        if found is None:
            continue
        raw = {(cell.task, cell.measure): cell.p for cell in found.cells}
        for j, measure in enumerate(table.value_headers):
            p = raw.get((row.group, measure))
            if p is not None:
                cells.append((i, j, p))
    adjusted = holm([p for _, _, p in cells]).tolist() if cells else []
    significant = {(i, j) for (i, j, _), p in zip(cells, adjusted) if p < settings.alpha}
    rows = []
    for i, row in enumerate(table.rows):
        if row.entry in comparisons:
            marks = tuple((i, j) in significant for j in range(len(row.values)))
            row = dataclasses.replace(row, marks=marks)
        rows.append(row)
    return dataclasses.replace(table, rows=tuple(rows))
