"""Figures of results: recall curves, the domain matrix, first-hit ranks, comparisons, distractors.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state,
safe in threads and notebooks); :func:`save` writes it as PNG, SVG or PDF with the same bytes for
the same input. matplotlib is the optional extra ``ropebench[plot]`` and is imported only when a
function here runs, so ``import ropebench.render.plots`` stays cheap.

A *result* is the results JSON of ``ropebench evaluate --out`` as a dict, any object with a
``to_json()`` returning that dict (an ``EvaluationResult``), or a leaderboard entry (whose
``results`` stand for ``tasks``). The figures' shared helpers (input coercion, panels,
:func:`save`) are in :mod:`ropebench.render.plot_common`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropebench.errors import UsageError
from ropebench.protocol import DOMAIN_NAMES, DOMAINS
from ropebench.render.plot_common import (
    FORMATS,
    INSTALL_HINT,
    _columns,
    _document,
    _documents,
    _ks,
    _label,
    _labels,
    _line_panel,
    _panels,
    _task_order,
    _tasks,
    _value,
    require_matplotlib,
    save,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "INSTALL_HINT", "compare", "curves", "difficulty", "distractors", "matrix", "require_matplotlib",
           "save"]


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
        raise UsageError("nothing to plot: the results carry no R@K value. Fix: pass a results file written by "
                         "`ropebench evaluate --out`")
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
                         "(measures are named like R@1, R@10, MRR@50). Fix: choose --measure among the run's Ks")
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
                         "Fix: pass the per-query file `ropebench evaluate --out R.json` writes beside R.json")
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
                             "censored queries' ranks are unknown past it. Fix: use Ks up to the run's")
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
        raise UsageError("not a comparison: expected schema ropebench.comparison/1 with 'cells'. "
                         "Fix: write one with `ropebench compare A B --out comparison.json`")
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
                             "distractors at several sizes) or {'sizes': [...], 'tasks': {task: {'R@1': [...]}}}. "
                             "Fix: evaluate with --distractors CATALOGUE --distractor-sizes 0,…,all --out R.json")
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
                    raise UsageError(f"{name} {task} {measure}: {len(values)} values for {len(curve['sizes'])} "
                                     "sizes. Fix: pass the curve evaluate wrote, unedited")
                label = f"{name} {measure}" if len(curves_) > 1 else measure
                axes.plot(curve["sizes"], [_value(v) for v in values], marker="o", markersize=3.5, label=label)
        positive = [s for s in sizes if s > 0]
        if len(positive) < len(sizes):
            axes.set_xscale("symlog", linthresh=positive[0] if positive else 1.0, linscale=0.5)
        else:
            axes.set_xscale("log")
        _line_panel(axes, task, "distractor items added", sizes, [_size_name(s) for s in sizes])
        # Headroom above the highest point: a flat curve near the top sat on the frame, unreadable.
        top = axes.dataLim.y1 if axes.lines else 100.0
        axes.set_ylim(0, top + max(2.0, 0.08 * top))
        axes.set_ylabel(f"{drawn[0]} (%)" if len(drawn) == 1 else "%")  # several measures may share a panel
    figure.axes[0].legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return figure
