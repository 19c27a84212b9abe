"""Few-shot accuracy against shots (``ropebench plot … --kind fewshot``, extra ``ropebench[plot]``).

One panel per result, one line per direction (``V2P``: videos classified by product-page
prototypes), x = shots (the k of ``--shots``), y = accuracy in % (0–100) with the 95%
product-level interval as an error bar when the result carries ``ci``. Reads the results JSON's
``fewshot`` section (docs/fewshot.md)::

    {"protocol": {"shots": [1, 5], "draws": 10, "seed": 0},
     "tasks": {"V2P": {"1-shot": {"acc": 61.7, "ci": {"acc": [58.1, 65.3]}, …}, …}, …}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ropebench.errors import UsageError
from ropebench.protocol import CROSS_TASKS
from ropebench.render.plot_common import _documents, _labels, _panels, _value

__all__ = ["FEWSHOT_MEASURES", "fewshot"]

FEWSHOT_MEASURES: tuple[str, ...] = ("acc", "acc_macro", "acc@5")


def _section(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = document.get("fewshot")
    if not isinstance(section, Mapping) or not isinstance(section.get("tasks"), Mapping) or not section["tasks"]:
        raise UsageError(f"{name}: no few-shot results (no 'fewshot' section). Fix: evaluate with `ropebench "
                         "evaluate SUB --fewshot --out results.json` and plot results.json")
    return section


def fewshot(results: Any, *, measure: str = "acc", labels: Any = None, columns: int = 2,
            title: str | None = None) -> Any:
    """Few-shot ``measure`` (``acc``, ``acc_macro`` or ``acc@5``) against shots, one line per direction.

    Args:
        results: one result (JSON dict or result object) or a sequence of them: one panel each.

    Returns:
        A matplotlib Figure with one axes per result; ticks at the shots evaluated.
    """
    if measure not in FEWSHOT_MEASURES:
        raise UsageError(f"measure {measure!r}: few-shot measures are {', '.join(FEWSHOT_MEASURES)}")
    documents = _documents(results)
    names = _labels(documents, labels)
    sections = [_section(document, name) for document, name in zip(documents, names)]
    figure, panels = _panels(len(documents), columns, (4.6, 3.4), sharey=True)
    for axes, section, name in zip(panels, sections, names):
        shots_seen: set[int] = set()
        for direction in [d for d in CROSS_TASKS if d in section["tasks"]]:
            by_shots = section["tasks"][direction]
            if not isinstance(by_shots, Mapping):
                raise UsageError(f"{name}: fewshot.tasks.{direction} is not an object of shots. Fix: pass the "
                                 "results file `ropebench evaluate --fewshot` wrote, unedited")
            points = sorted((int(str(shots).split("-")[0]), cells) for shots, cells in by_shots.items())
            xs = [k for k, _ in points]
            ys = [_value(cells.get(measure)) for _, cells in points]
            shots_seen.update(xs)
            found = [(cells.get("ci") or {}).get(measure) for _, cells in points]
            bounds = [(float(b[0]), float(b[1])) for b in found if isinstance(b, (list, tuple)) and len(b) == 2]
            if measure == "acc" and len(bounds) == len(points):
                errors = [[y - low for y, (low, _) in zip(ys, bounds)], [high - y for y, (_, high) in zip(ys, bounds)]]
                axes.errorbar(xs, ys, yerr=errors, marker="o", markersize=3.5, capsize=2.5, label=direction)
            else:
                axes.plot(xs, ys, marker="o", markersize=3.5, label=direction)
        protocol = section.get("protocol") or {}
        ticks = sorted(shots_seen)
        axes.set_xticks(ticks, labels=[str(k) for k in ticks])
        if len(ticks) > 1 and ticks[-1] / ticks[0] >= 4:
            axes.set_xscale("log")
            axes.set_xticks(ticks, labels=[str(k) for k in ticks])
            axes.minorticks_off()
        axes.set(title=f"{name} ({protocol.get('draws', '?')} draws, seed {protocol.get('seed', '?')})",
                 xlabel="shots (support items per product)", ylabel=f"few-shot {measure} (%)", ylim=(0, 100))
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small", title="direction", title_fontsize="small", loc="lower right")
    if title:
        figure.suptitle(title)
    return figure
