"""The deployment trade-off: a measure against bytes per item over several compressions
(``ropebench plot … --kind compression``, extra ``ropebench[plot]``).

One point per result: x = bytes one item's vector takes (``protocol.bytes_per_item`` for a result
of ``evaluate --compress``, else the submission's ``dim × itemsize``), y = the unweighted mean of
the measure over the cross-domain tasks (``cross/R@1`` by default) with the range of the six
tasks' 95% intervals' mean as an error bar when the results carry ``ci``. Results of one
submission (same sha256) share a colour, each labelled by its compression; a dashed line joins
the frontier (the best value at or below each size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ropebench.errors import UsageError
from ropebench.protocol import CROSS_TASKS, INTRA_TASKS
from ropebench.render.plot_common import _documents, _figure_class, _label, _tasks, _value

__all__ = ["compression_tradeoff"]


def _mean(document: Mapping[str, Any], tasks: Sequence[str], measure: str) -> tuple[float, float, float] | None:
    """(mean, mean of the lows, mean of the highs) over ``tasks``, or None when a task lacks the measure."""
    found = _tasks(document)
    cells = [found.get(task) for task in tasks]
    if any(not isinstance(cell, Mapping) or cell.get(measure) is None for cell in cells):
        return None
    values = [_value(cell[measure]) for cell in cells if isinstance(cell, Mapping)]
    mean = sum(values) / len(values)
    bounds = [(cell.get("ci") or {}).get(measure) for cell in cells if isinstance(cell, Mapping)]
    pairs = [(float(b[0]), float(b[1])) for b in bounds if isinstance(b, (list, tuple)) and len(b) == 2]
    if len(pairs) == len(cells):
        return mean, sum(low for low, _ in pairs) / len(pairs), sum(high for _, high in pairs) / len(pairs)
    return mean, mean, mean


def compression_tradeoff(results: Any, *, measure: str = "R@1", tasks: str = "cross",
                         title: str | None = None) -> Any:
    """``measure`` (mean over ``tasks``: ``cross`` or ``intra``) against bytes per item.

    Args:
        results: results (JSON dicts or result objects), typically one submission evaluated with
            several ``--compress`` values and without.

    Returns:
        A matplotlib Figure; x is logarithmic (base 2), each point labelled by its compression.
    """
    from ropebench.compress import bytes_per_item, compression_label

    if tasks not in ("cross", "intra"):
        raise UsageError(f"tasks={tasks!r}: choose 'cross' or 'intra'")
    chosen = CROSS_TASKS if tasks == "cross" else INTRA_TASKS
    documents = _documents(results)
    groups: dict[str, list[tuple[int, tuple[float, float, float], str]]] = {}
    names: dict[str, str] = {}
    for index, document in enumerate(documents):
        size = bytes_per_item(document)
        value = _mean(document, chosen, measure)
        if size is None or value is None:
            raise UsageError(f"{_label(document, index)}: needs its bytes per item (protocol.bytes_per_item, or "
                             f"submission dim and dtype) and {measure} on every {tasks} task")
        key = str((document.get("submission") or {}).get("sha256") or index)
        groups.setdefault(key, []).append((size, value, compression_label(document)))
        names.setdefault(key, _label(document, index))
    figure = _figure_class()(figsize=(6.0, 4.0), layout="constrained")
    axes = figure.add_subplot()
    for key, points in groups.items():
        points.sort()
        xs = [size for size, _, _ in points]
        ys = [value[0] for _, value, _ in points]
        errors = [[value[0] - value[1] for _, value, _ in points], [value[2] - value[0] for _, value, _ in points]]
        drawn = axes.errorbar(xs, ys, yerr=errors, marker="o", markersize=4, capsize=3, linestyle="none",
                              label=names[key])
        # The frontier: the best value at or below each size (what a catalogue of that size can get).
        front, best = [], float("-inf")
        for size, value, _ in points:
            if value[0] > best:
                front.append((size, value[0]))
                best = value[0]
        axes.plot([x for x, _ in front], [y for _, y in front], linestyle="--", linewidth=1,
                  color=drawn.lines[0].get_color(), alpha=0.6)
        for size, value, name in points:
            axes.annotate(name, (size, value[0]), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("bytes per item (log scale)")
    axes.set_ylabel(f"{tasks}/{measure} (%)")
    axes.grid(True, alpha=0.3)
    if len(groups) > 1:
        axes.legend(fontsize="small")
    axes.set_title(title or f"{tasks}/{measure} against storage per item")
    return figure
