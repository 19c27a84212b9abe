"""Figures of results: recall curves, the domain matrix, first-hit ranks, comparisons, distractors.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state,
safe in threads and notebooks); :func:`save` writes it as PNG, SVG or PDF with the same bytes for
the same input. matplotlib is the optional extra ``ropebench[plot]`` and is imported only when a
function here runs, so ``import ropebench.render.plots`` stays cheap.

A *result* is the results JSON of ``ropebench evaluate --out`` as a dict, any object with a
``to_json()`` returning that dict (an ``EvaluationResult``), or a leaderboard entry (whose
``results`` stand for ``tasks``).
"""

from __future__ import annotations

import io
import math
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropebench.errors import MissingExtraError, UsageError
from ropebench.protocol import ALL_TASKS, DOMAIN_NAMES, DOMAINS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "INSTALL_HINT", "compare", "curves", "difficulty", "distractors", "matrix", "require_matplotlib",
           "save"]

FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
INSTALL_HINT = "plots need matplotlib: pip install 'ropebench[plot]'"

# Metadata that would otherwise change the bytes from run to run or between versions: the
# software string, creation dates. None removes the key.
_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "svg": {"Creator": None, "Date": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}


def require_matplotlib() -> None:
    """Raise MissingExtraError with the install command unless matplotlib can be imported."""
    _figure_class()


def _figure_class() -> type[Figure]:
    try:
        # The package first: a cached matplotlib.figure must not hide a matplotlib that is gone.
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError(INSTALL_HINT) from None
    return Figure


def _document(result: Any) -> dict[str, Any]:
    """A result as its JSON dict (``to_json()`` objects are converted, dicts used as they are)."""
    if hasattr(result, "to_json"):
        result = result.to_json()
    if not isinstance(result, Mapping):
        raise UsageError(f"expected a results JSON dict or an object with to_json(), got {type(result).__name__}")
    return dict(result)


def _documents(results: Any) -> list[dict[str, Any]]:
    """One result or a sequence of them, as a list of JSON dicts."""
    if isinstance(results, Mapping) or hasattr(results, "to_json"):
        return [_document(results)]
    documents = [_document(result) for result in results]
    if not documents:
        raise UsageError("nothing to plot: no result given")
    return documents


def _tasks(document: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    tasks = document.get("tasks", document.get("results"))
    if not isinstance(tasks, Mapping):
        raise UsageError("not a results JSON: it has no 'tasks' object (schema ropebench.results/1)")
    return tasks


def _ks(document: Mapping[str, Any]) -> list[int]:
    """The run's Ks: ``protocol.ks``, else the ``R@K`` keys found in its tasks."""
    ks = (document.get("protocol") or {}).get("ks")
    if ks:
        return sorted(int(k) for k in ks)
    found = {int(key[2:]) for task in _tasks(document).values() for key in task
             if key.startswith("R@") and key[2:].isdigit()}
    return sorted(found)


def _label(document: Mapping[str, Any], index: int) -> str:
    if document.get("label"):
        return str(document["label"])
    path = (document.get("submission") or {}).get("path")
    return Path(str(path)).stem if path else f"result {index + 1}"


def _labels(documents: Sequence[Mapping[str, Any]], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        return [_label(document, i) for i, document in enumerate(documents)]
    if len(labels) != len(documents):
        raise UsageError(f"{len(labels)} labels for {len(documents)} results: give one label per result")
    return [str(label) for label in labels]


def _task_order(present: set[str], tasks: Sequence[str] | None) -> list[str]:
    """Tasks to draw: the ones asked for, else the ones present, in the protocol's order."""
    if tasks is not None:
        missing = [task for task in tasks if task not in present]
        if missing:
            raise UsageError(f"no data for task(s) {', '.join(missing)}: present are "
                             f"{', '.join(t for t in ALL_TASKS if t in present) or 'none'}")
        return list(tasks)
    ordered = [task for task in ALL_TASKS if task in present]
    ordered += sorted(present - set(ALL_TASKS))
    if not ordered:
        raise UsageError("nothing to plot: the result has no task")
    return ordered


def _value(cell: Any) -> float:
    """A number, or NaN for a missing one (matplotlib leaves a gap)."""
    return float(cell) if isinstance(cell, (int, float)) and not isinstance(cell, bool) else math.nan


def _panels(count: int, columns: int, size: tuple[float, float], *,
            sharey: bool = False) -> tuple[Figure, list[Axes]]:
    """A new Figure with ``count`` axes of ``size`` inches on a grid of ``columns``; unused grid
    cells are removed, so ``len(figure.axes) == count``."""
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure = _figure_class()(figsize=(size[0] * columns, size[1] * rows + 0.4), layout="constrained")
    flat = [axes for row in figure.subplots(rows, columns, squeeze=False, sharey=sharey) for axes in row]
    for extra in flat[count:]:
        figure.delaxes(extra)
    return figure, flat[:count]


def _line_panel(axes: Axes, title: str, xlabel: str, ticks: Sequence[float], names: Sequence[str]) -> None:
    """Ticks exactly at ``ticks`` (a log x axis), labels and a grid for a panel of R@K lines."""
    from matplotlib.ticker import NullLocator

    axes.set_xticks(list(ticks), labels=list(names))
    axes.xaxis.set_minor_locator(NullLocator())  # log axes add minor ticks between ours
    axes.set(title=title, xlabel=xlabel, ylabel="R@K (%)")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)


def curves(results: Any, *, tasks: Sequence[str] | None = None, labels: Sequence[str] | None = None,
           columns: int = 3, bands: bool = True, title: str | None = None) -> Figure:
    """R@K against K (log axis, ticks at the run's Ks), one panel per task, one line per result.

    Args:
        results: one result or a sequence of results (several lines per panel, with a legend).
        tasks: task codes to draw; default every task present, in protocol order.
        labels: one legend label per result; default the entry label or the submission's name.
        columns: panels per row.
        bands: shade the 95% interval where a task carries ``ci`` (``{"R@1": [low, high], …}``).
        title: figure title.

    Returns:
        A Figure with one axes per task; line ``i`` of each axes is result ``i``.
    """
    documents = _documents(results)
    names = _labels(documents, labels)
    chosen = _task_order({task for d in documents for task in _tasks(d)}, tasks)
    all_ks = sorted({k for document in documents for k in _ks(document)})
    if not all_ks:
        raise UsageError("nothing to plot: the results carry no R@K value")
    figure, panels = _panels(len(chosen), columns, (3.4, 2.8))
    for axes, task in zip(panels, chosen):
        for document, name in zip(documents, names):
            cell = _tasks(document).get(task) or {}
            ks = _ks(document)
            values = [_value(cell.get(f"R@{k}")) for k in ks]
            (line,) = axes.plot(ks, values, marker="o", markersize=3.5, label=name)
            interval = cell.get("ci") if bands else None
            if isinstance(interval, Mapping):
                low = [_value((interval.get(f"R@{k}") or [None, None])[0]) for k in ks]
                high = [_value((interval.get(f"R@{k}") or [None, None])[1]) for k in ks]
                axes.fill_between(ks, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        axes.set_xscale("log")
        _line_panel(axes, task, "K", all_ks, [str(k) for k in all_ks])
    if len(documents) > 1:
        figure.axes[0].legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def matrix(result: Any, *, measure: str = "R@1", title: str | None = None, cmap: str = "viridis") -> Figure:
    """The 3×3 query-domain × gallery-domain heatmap of one measure, on a fixed 0–100 colour scale.

    The scale is fixed (``vmin=0, vmax=100``) so that two matrices compare by colour. Each cell is
    annotated with its value (2 decimals); a task the result lacks is blank and marked "–".

    Returns:
        A Figure: the heatmap axes (``images[0]`` holds the 3×3 array, NaN where missing) and a
        colour bar.
    """
    import numpy as np

    document = _document(result)
    tasks = _tasks(document)
    values = np.array([[_value((tasks.get(f"{q}2{g}") or {}).get(measure)) for g in DOMAINS]
                       for q in DOMAINS])
    if np.isnan(values).all():
        raise UsageError(f"nothing to plot: the result has no {measure} value "
                         "(measures are named like R@1, R@10, MRR@50)")
    figure, (axes,) = _panels(1, 1, (5.2, 3.6))
    image = axes.imshow(values, vmin=0, vmax=100, cmap=cmap)
    for (i, j), value in np.ndenumerate(values):
        red, green, blue, _ = image.cmap(image.norm(value)) if not np.isnan(value) else (1, 1, 1, 1)
        # Dark text on light cells and light text on dark ones (relative luminance).
        dark = 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5
        axes.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
                  color="black" if dark else "white")
    ticks = [f"{code}\n{DOMAIN_NAMES[code]}" for code in DOMAINS]
    axes.set_xticks(range(len(DOMAINS)), labels=ticks, fontsize="small")
    axes.set_yticks(range(len(DOMAINS)), labels=ticks, fontsize="small")
    axes.set(xlabel="gallery domain", ylabel="query domain")
    figure.colorbar(image, ax=axes, label=f"{measure} (%)")
    axes.set_title(title if title is not None else f"{measure}: {_label(document, 0)}")
    return figure


def _columns(table: Any, names: Sequence[str]) -> dict[str, Any]:
    """The named columns of a pyarrow Table, pandas DataFrame or dict of arrays, as numpy arrays."""
    import numpy as np

    if hasattr(table, "column_names"):  # pyarrow.Table
        available = list(table.column_names)
        return {n: table.column(n).to_numpy() for n in names if n in available} | {"": available}
    available = [str(name) for name in (table.columns if hasattr(table, "columns") else table)]
    return {n: np.asarray(table[n]) for n in names if n in available} | {"": available}


def _buckets(ks: Sequence[int]) -> list[str]:
    """Bar names for first-hit ranks grouped by the Ks: ``1``, ``2–5``, …, then ``>K``."""
    names, low = [], 0
    for k in ks:
        names.append(str(k) if k == low + 1 else f"{low + 1}–{k}")
        low = k
    return names + [f">{ks[-1]}"]


def difficulty(per_query_table: Any, *, tasks: Sequence[str] | None = None, ks: Sequence[int] | None = None,
               columns: int = 3, title: str | None = None) -> Figure:
    """Histogram of first-hit ranks per task, from the per-query table of ``evaluate --per-query``.

    The rank of a query is ``a + 1`` (``a`` = irrelevant items scoring strictly above its best
    relevant one: the rank when ties break in its favour). Ranks are grouped by the Ks (``1``,
    ``2–5``, ``6–10``, …) so that the bars add up to the optimistic R@K. A query marked
    ``censored`` (its search stopped at max K and stored ``a = max K``) or ranked beyond max K
    goes to the overflow bar ``>max K``: its exact rank is unknown, only that it is a miss.

    Args:
        per_query_table: pyarrow Table, pandas DataFrame or dict of columns with ``task`` and
            ``a`` (``t``, ``p`` may be present; ``censored`` is optional, default all False).
        tasks: task codes to draw; default every task present, in protocol order.
        ks: the rank groups; default the Ks of the table's ``R@K`` (or ``hit@K``) columns,
            else ``1,5,10,20,50``.

    Returns:
        A Figure with one axes per task; its bars are the percentage of the task's queries per
        group, the last bar being the overflow.
    """
    import numpy as np

    from ropebench.protocol import DEFAULT_KS

    data = _columns(per_query_table, ("task", "a", "censored"))
    missing = [name for name in ("task", "a") if name not in data]
    if missing:
        raise UsageError(f"per-query table lacks column(s) {', '.join(missing)} (has {', '.join(data[''])}): "
                         "write it with `ropebench evaluate --per-query FILE`")
    if ks is None:
        found = [re.fullmatch(r"(?:R|hit)@([0-9]+)", name) for name in data[""]]
        ks = sorted({int(match[1]) for match in found if match}) or list(DEFAULT_KS)
    ks = sorted(int(k) for k in ks)
    task_column = data["task"].astype(str)
    rank = data["a"].astype(np.int64) + 1
    over = rank > ks[-1]
    if "censored" in data:
        censored = data["censored"].astype(bool)
        if (rank[censored] <= ks[-1]).any():
            raise UsageError(f"ks reach {ks[-1]}, beyond the run's max K ({int(rank[censored].min()) - 1}): "
                             "censored queries' ranks are unknown past it; use Ks up to the run's")
        over |= censored
    group = np.where(over, len(ks), np.searchsorted(ks, rank, side="left"))
    chosen = _task_order(set(task_column.tolist()), tasks)
    names = _buckets(ks)
    figure, panels = _panels(len(chosen), columns, (3.6, 2.8))
    for axes, task in zip(panels, chosen):
        counts = np.bincount(group[task_column == task], minlength=len(names))
        share = 100.0 * counts / max(1, counts.sum())
        colours = ["C0"] * len(ks) + ["0.6"]  # the overflow bar is grey: ranks beyond max K unknown
        axes.bar(range(len(names)), share, color=colours, tick_label=names)
        axes.set(title=f"{task} ({int(counts.sum())} queries)", xlabel="first-hit rank", ylabel="% of queries")
        axes.tick_params(axis="x", labelsize="small")
    if title:
        figure.suptitle(title)
    return figure


def compare(comparison_json: Any, *, measures: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Δ = A − B with its 95% interval for every cell of a comparison (``ropebench compare --out``).

    One panel per measure, one row per task; the primary hypothesis (``cross/R@1``) is the top
    row of its measure's panel. Significant cells (``p_holm < α``; the primary: ``p < α``) are
    filled red dots, the others hollow; the vertical line is Δ = 0.

    Args:
        comparison_json: the ``ropebench.comparison/1`` dict (or an object with ``to_json()``).
        measures: measures to draw; default every measure in ``cells``, in their order.

    Returns:
        A Figure with one axes per measure. In each, the line labelled ``significant`` holds
        the significant Δs and ``not significant`` the others; ``collections[0]`` the intervals.
    """
    document = _document(comparison_json)
    if document.get("schema") != "ropebench.comparison/1" or not isinstance(document.get("cells"), list):
        raise UsageError("not a comparison: expected schema ropebench.comparison/1 with 'cells' "
                         "(write one with `ropebench compare A B --out comparison.json`)")
    cells = document["cells"]
    chosen = list(measures) if measures else list(dict.fromkeys(str(c["measure"]) for c in cells))
    tasks = _task_order({str(c["task"]) for c in cells if c["measure"] in chosen}, None)
    primary = document.get("primary")
    hypothesis = str(primary["hypothesis"]) if primary else ""
    rows = ([f"{hypothesis} (primary)"] if primary else []) + tasks
    figure, panels = _panels(len(chosen), len(chosen), (2.6, 0.32 * len(rows) + 1.0), sharey=True)
    for axes, measure in zip(panels, chosen):
        points: list[tuple[int, Mapping[str, Any]]] = [
            (rows.index(str(c["task"])), c) for c in cells if c["measure"] == measure and str(c["task"]) in tasks]
        if primary and hypothesis.split("/")[-1] == measure:
            points.insert(0, (0, primary))
        bounds = [(y, c["ci"]) for y, c in points if isinstance(c.get("ci"), list) and None not in c["ci"]]
        axes.hlines([y for y, _ in bounds], [ci[0] for _, ci in bounds], [ci[1] for _, ci in bounds], color="0.35")
        for significant in (True, False):
            picked = [(y, _value(c["delta"])) for y, c in points if bool(c.get("significant")) is significant]
            if picked:
                axes.plot([x for _, x in picked], [y for y, _ in picked], "o", zorder=3,
                          color="C3" if significant else "C0", markerfacecolor="C3" if significant else "white",
                          label="significant" if significant else "not significant")
        axes.axvline(0, color="0.5", linewidth=0.8)
        axes.set(title=measure, xlabel="Δ = A − B (points)")
        axes.set_yticks(range(len(rows)), labels=rows)
        axes.set_ylim(len(rows) - 0.5, -0.5)  # top-down: primary first
        axes.grid(True, axis="x", alpha=0.3)
    # One legend below the panels (inside one it would hide a row), for the markers of any panel.
    handles: dict[str, Any] = {}
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, fontsize="small")
    names = [Path(str((document.get(side) or {}).get("path", side))).stem for side in ("a", "b")]
    figure.suptitle(title if title is not None else f"A = {names[0]}, B = {names[1]}")
    return figure


def _size_name(size: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= scale:
            return f"{size / scale:g}{suffix}"
    return f"{size:g}"


def distractors(results: Any, *, measures: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                labels: Sequence[str] | None = None, columns: int = 3, title: str | None = None) -> Figure:
    """R@K against catalogue size (distractor items added), one panel per task.

    Reads the ``distractor_curve`` of a result evaluated with distractors at several sizes
    (``distractor_sizes="0,1e5,1e6,all"``), or that curve on its own::

        {"sizes": [0, 100000, 1000000],              # distractor items added, ascending
         "tasks": {"P2V": {"R@1": [82.6, 71.0, 55.3], "R@10": [...]}, ...}}

    Args:
        results: one result (or curve) or a sequence of them: one line per result and measure.
        measures: measures to draw; default every measure found.

    Returns:
        A Figure with one axes per task; the x axis is logarithmic (symmetric-log, so 0 shows,
        when ``sizes`` holds 0) with ticks at ``sizes``.
    """
    documents = _documents(results)
    curves_ = [document.get("distractor_curve", document) for document in documents]
    for curve in curves_:
        if not isinstance(curve.get("sizes"), list) or not isinstance(curve.get("tasks"), Mapping):
            raise UsageError("no distractor curve: expected a result with 'distractor_curve' (evaluate with "
                             "distractors at several sizes) or {'sizes': [...], 'tasks': {task: {'R@1': [...]}}}")
    names = _labels(documents, labels)
    chosen = _task_order({task for curve in curves_ for task in curve["tasks"]}, tasks)
    found = list(dict.fromkeys(m for curve in curves_ for t in curve["tasks"].values() for m in t))
    drawn = list(measures) if measures else found
    sizes = sorted({float(s) for curve in curves_ for s in curve["sizes"]})
    figure, panels = _panels(len(chosen), columns, (3.6, 2.8))
    for axes, task in zip(panels, chosen):
        for curve, name in zip(curves_, names):
            for measure in drawn:
                values = (curve["tasks"].get(task) or {}).get(measure)
                if values is None:
                    continue
                if len(values) != len(curve["sizes"]):
                    raise UsageError(f"{name} {task} {measure}: {len(values)} values for {len(curve['sizes'])} sizes")
                label = f"{name} {measure}" if len(curves_) > 1 else measure
                axes.plot(curve["sizes"], [_value(v) for v in values], marker="o", markersize=3.5, label=label)
        positive = [s for s in sizes if s > 0]
        if len(positive) < len(sizes):
            axes.set_xscale("symlog", linthresh=positive[0] if positive else 1.0, linscale=0.5)
        else:
            axes.set_xscale("log")
        _line_panel(axes, task, "distractor items added", sizes, [_size_name(s) for s in sizes])
        axes.set_ylabel(f"{drawn[0]} (%)" if len(drawn) == 1 else "%")  # several measures may share a panel
    figure.axes[0].legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure


def save(figure: Figure, path_stem: str | os.PathLike[str], formats: Sequence[str] = ("png",), *,
         dpi: int = 150) -> list[Path]:
    """Write ``figure`` as ``<path_stem>.<format>`` for each format; the same figure gives the same bytes.

    Creation dates and software versions are left out of the files and SVG ids use a fixed salt,
    so a rebuilt figure is byte-identical (for the same matplotlib and fonts). Each file is
    written to a temporary name and renamed, so a reader never sees half a file.

    Returns:
        The paths written, in the order of ``formats``.
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise UsageError(f"unknown plot format(s) {', '.join(unknown)}: choose from {', '.join(FORMATS)}")
    stem = Path(path_stem)
    written = []
    for fmt in formats:
        data = _render(figure, fmt, dpi)
        path = stem.with_name(f"{stem.name}.{fmt}")
        # open(..., "xb") rather than mkstemp: the file gets the user's umask, not mode 0600.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "xb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        written.append(path)
    return written


def _render(figure: Figure, fmt: str, dpi: int) -> bytes:
    import matplotlib

    buffer = io.BytesIO()
    # SVG ids (clip paths, glyphs) are hashed with this salt; a fixed salt gives fixed ids.
    with matplotlib.rc_context({"svg.hashsalt": "ropebench", "svg.fonttype": "path"}):
        figure.savefig(buffer, format=fmt, dpi=dpi, metadata=_METADATA[fmt])
    return buffer.getvalue()

