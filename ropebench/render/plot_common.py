"""What every figure of :mod:`ropebench.render.plots` shares: matplotlib imported on demand, the
inputs coerced (results as JSON dicts, labels, task order, per-query columns), panels, and saving.

matplotlib is imported only inside these functions (the optional extra ``ropebench[plot]``), so
importing this module stays cheap. :func:`save` writes the same bytes for the same figure.
"""

from __future__ import annotations

import io
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropebench.errors import MissingExtraError, UsageError
from ropebench.protocol import ALL_TASKS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "INSTALL_HINT", "require_matplotlib", "save"]

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
        raise UsageError("not a results JSON: it has no 'tasks' object (schema ropebench.results/1). Fix: pass a "
                         "file written by `ropebench evaluate --out`")
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
        raise UsageError("nothing to plot: the result has no task. Fix: pass a result with at least one scored task")
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


def _columns(table: Any, names: Sequence[str]) -> dict[str, Any]:
    """The named columns of a pyarrow Table, pandas DataFrame or dict of arrays, as numpy arrays."""
    import numpy as np

    if hasattr(table, "column_names"):  # pyarrow.Table
        available = list(table.column_names)
        return {n: table.column(n).to_numpy() for n in names if n in available} | {"": available}
    available = [str(name) for name in (table.columns if hasattr(table, "columns") else table)]
    return {n: np.asarray(table[n]) for n in names if n in available} | {"": available}


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
