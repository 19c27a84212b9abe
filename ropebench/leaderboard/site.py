"""The leaderboard as a static site: an index of suites and one page per suite.

A suite's page holds Table 1, Table 2 and every entry's 3×3 matrix (each table sortable by any
column with a few lines of inline JavaScript), the plots (SVG files beside the pages, when
matplotlib is installed) and every entry's provenance. Nothing is fetched from the network: no
CDN, no font, no external link; a Content-Security-Policy allows only the page's own script and
style (by hash) and images from the site itself, so even a label that slipped through escaping
could not run. The same leaderboard gives the same bytes (no build date in the pages).

Layout of ``out``::

    index.html                 the suites
    <suite>.html               tables, plots, provenance
    plots/<suite>/*.svg        figures: curves of every entry; per computed entry its matrix and,
                               when its per-query file is there, its first-hit ranks
    favicon.svg                the pages' icon
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ropebench
from ropebench.errors import DataError, MissingExtraError, UsageError
from ropebench.leaderboard import Suite, entry_matrix, load_suite, suite_names, suite_tables
from ropebench.leaderboard.paths import check_regular, confined
from ropebench.protocol import ALL_TASKS, DOMAINS
from ropebench.render.numbers import format_number
from ropebench.render.tables import Table

__all__ = ["MARKER", "build_site"]

MARKER = ".ropebench-site"  # marks a directory this module built, so a rebuild may replace it
MATRIX_MEASURE = "R@1"
# A local icon: without one, browsers ask the server for /favicon.ico (a 404 on most hosts).
# It draws the 3×3 domain matrix with a bright diagonal.
_ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 3 3"><rect width="3" height="3" fill="#3b528b"/>'
         + "".join(f'<rect x="{i}" y="{i}" width="1" height="1" fill="#fde725"/>' for i in range(3)) + "</svg>\n")

_STYLE = """\
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; line-height: 1.4; }
table { border-collapse: collapse; margin: 1em 0 2em; border-top: 2px solid; border-bottom: 2px solid; }
caption { caption-side: top; text-align: left; padding-bottom: 0.5em; }
thead th { border-bottom: 1px solid; }
th, td { padding: 0.25em 0.75em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th button { font: inherit; font-weight: bold; background: none; border: 0; padding: 0; cursor: pointer; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #f4f4f4; }
.matrices { display: flex; flex-wrap: wrap; gap: 0 2em; }
.entry { border-top: 1px solid #ccc; padding-top: 0.5em; }
dt { font-weight: bold; } dd { margin: 0 0 0.4em 1.5em; overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-style: italic; }
.rank { color: #555; font-size: 0.85em; }
#filters { border: 1px solid #ccc; padding: 0.5em 1em; margin: 1em 0; }
#filters label { margin-right: 1.5em; }
footer { margin-top: 3em; color: #555; font-size: 0.9em; }
"""

# Click a header: rows sort by that column, then reverse on the next click. data-type says how:
# "num" (unrounded data-sort values, best first), "text" (A-Z) or "order" (data-sort positions,
# e.g. the protocol's task order, first to last). Missing values always sort last; the sort is
# stable, so equal values keep their current order.
_SCRIPT = """\
(function () {
  "use strict";
  function key(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (!numeric) { return raw; }
    return raw === "" ? null : parseFloat(raw);
  }
  function sortBy(table, header, column) {
    var type = header.getAttribute("data-type");
    var numeric = type !== "text";
    var current = header.getAttribute("aria-sort");
    var ascending = current ? current === "descending" : type !== "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column], numeric), y = key(b.cells[column], numeric);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      var order = numeric ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(header.parentNode.cells, function (cell) { cell.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.querySelector("button").addEventListener("click", function () { sortBy(table, header, column); });
    });
  });
  // Filters: hide the rows of entries that do not match (zero-shot only, trained on ROPE, size).
  var filters = document.getElementById("filters");
  if (filters) {
    var apply = function () {
      var zeroShot = filters.querySelector("#only-zero-shot").checked;
      var ropeTrain = filters.querySelector("#only-rope-train").checked;
      var maxBytes = parseFloat(filters.querySelector("#max-bytes").value);
      var maxParameters = parseFloat(filters.querySelector("#max-parameters").value);
      Array.prototype.forEach.call(document.querySelectorAll("tr[data-entry]"), function (row) {
        var bytes = parseFloat(row.getAttribute("data-bytes"));
        var parameters = parseFloat(row.getAttribute("data-parameters"));
        var show = (!zeroShot || row.getAttribute("data-zero-shot") === "true")
          && (!ropeTrain || row.getAttribute("data-rope-train") === "true")
          && (!(maxBytes > 0) || bytes <= maxBytes)
          && (!(maxParameters > 0) || parameters <= maxParameters);
        row.hidden = !show;
      });
    };
    Array.prototype.forEach.call(filters.querySelectorAll("input, select"), function (control) {
      control.addEventListener("change", apply);
    });
  }
})();
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


# Only this page's own script and style run; images come from the site; nothing else loads.
_POLICY = (f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
           "img-src 'self'; base-uri 'none'; form-action 'none'")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _prose(value: Any) -> str:
    """A description's text, escaped, with its `code spans` (Markdown backticks) as <code>."""
    return re.sub(r"`([^`\n]+)`", r"<code>\1</code>", _esc(value))


def _page(title: str, body: Sequence[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',  # constant: no quote or &
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="favicon.svg" type="image/svg+xml">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        *body,
        (f"<footer>Built by ropebench {_esc(ropebench.__version__)} from the leaderboard files "
         "(<code>ropebench leaderboard site</code>). Viewing it needs no network.</footer>"),
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])


def _head(columns: Sequence[tuple[str, str]]) -> str:
    """The header row of a sortable table; each column is (name, "num" | "text" | "order")."""
    return "<thead><tr>" + "".join(f'<th scope="col" data-type="{kind}"><button type="button">{_esc(name)}'
                                   "</button></th>" for name, kind in columns) + "</tr></thead>"


def _entry_attributes(entry: Mapping[str, Any] | None) -> str:
    """``data-*`` attributes the filters read: zero-shot, trained on ROPE, bytes per item, parameters."""
    if entry is None:
        return ""
    from ropebench.leaderboard.metadata import effective_model

    model = effective_model(entry)
    training: Mapping[str, Any] = entry["training_data"] if isinstance(entry.get("training_data"), Mapping) else {}
    attributes = {"zero-shot": training.get("zero_shot"), "rope-train": training.get("rope_train"),
                  "bytes": model.get("bytes_per_item"), "parameters": model.get("parameters")}
    return "".join(f' data-{key}="{_esc(str(value).lower() if isinstance(value, bool) else value)}"'
                   for key, value in attributes.items() if value is not None)


def _table(table: Table, entries: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A sortable HTML table: one full row per table row (no row spans, so rows can move).

    ``entries`` (by name) give each row the ``data-*`` attributes the filters read.
    """
    order = {name: index for index, name in enumerate(ALL_TASKS + DOMAINS)}
    columns = [(table.group_header, "num" if table.kind == "ranks" else "order")]
    if table.label_header is not None:
        columns.append((table.label_header, "text"))
    if table.tag_header is not None:
        columns.append((table.tag_header, "text"))
    columns += [(name, "num") for name in table.value_headers]
    lines = [f'<table class="sortable" id="{_esc(table.key)}">',
             f"<caption><strong>{_esc(table.title)}.</strong> {_esc(table.caption)}</caption>",
             _head(columns), "<tbody>"]
    for row in table.rows:
        position = row.group if table.kind == "ranks" else order.get(row.group, len(order))
        cells = [f'<th scope="row" data-sort="{_esc(position)}">{_esc(row.group)}</th>']
        if table.label_header is not None:
            cells.append(f"<td>{_esc(row.label)}</td>")
        if table.tag_header is not None:
            cells.append(f"<td>{_esc(row.tag or '')}</td>")
        ranks = row.ranks or (None,) * len(row.values)
        cells += [f'<td class="num" data-sort="{"" if value is None else repr(float(value))}">'
                  f"{_esc(format_number(value))}"
                  + (f' <span class="rank">({bounds[0]}–{bounds[1]})</span>' if bounds and value is not None else "")
                  + "</td>" for value, bounds in zip(row.values, ranks)]
        attributes = _entry_attributes((entries or {}).get(row.entry))
        lines.append(f'<tr data-entry="{_esc(row.entry)}"{attributes}>' + "".join(cells) + "</tr>")
    return "\n".join([*lines, "</tbody>", "</table>"])


def _describe(value: Any) -> str:
    """A protocol or file reference as one line of text."""
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_describe(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_describe(item) for item in value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _provenance(entry: Mapping[str, Any]) -> list[str]:
    rows: list[tuple[str, str]] = [("kind", _esc(entry["kind"]) + (
        " (numbers copied from a paper; they cannot be recomputed)" if entry["kind"] == "published"
        else " (computed by ropebench from the submission below; re-checked by "
             "<code>ropebench leaderboard verify</code>)")), ("source", _esc(entry["source"]))]
    if entry.get("protocol"):
        rows.append(("protocol", _esc(_describe(entry["protocol"]))))
    if isinstance(entry.get("test_set"), Mapping):
        rows.append(("test set", _esc(_describe(entry["test_set"]))))
    for field in ("submission", "manifest", "per_query"):
        reference = entry.get(field)
        if isinstance(reference, Mapping):
            details = {key: value for key, value in reference.items() if key not in ("path", "sha256")}
            text = f"<code>{_esc(reference.get('path', ''))}</code>"
            if reference.get("sha256"):
                text += f"<br>sha256 <code>{_esc(reference['sha256'])}</code>"
            if details:
                text += f"<br>{_esc(_describe(details))}"
            rows.append((field.replace("_", "-"), text))
        elif field in entry:
            rows.append((field, "none (the submission carries its own labels)"))
    for field, name in (("ropebench_version", "ropebench version"), ("created", "created")):
        if entry.get(field):
            rows.append((name, _esc(entry[field])))
    return ["<dl>", *(f"<dt>{name}</dt><dd>{text}</dd>" for name, text in rows), "</dl>"]


def _figure(source: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{_esc(source)}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _plain(text: str) -> str:
    """A label for matplotlib: ``$`` would start mathtext (and fail on an odd count)."""
    return text.replace("$", r"\$")


def _first_hits(entry: Mapping[str, Any], base: Path) -> Any:
    """The entry's per-query table (task, a, censored) when its file is there, else None."""
    import pyarrow.parquet as pq

    reference = entry.get("per_query")
    if not isinstance(reference, Mapping) or not isinstance(reference.get("path"), str):
        return None
    try:  # like every leaderboard file: a regular file, never followed out of the base by a link
        path = confined(base / reference["path"], base, f"per-query file of {entry['name']}")
        check_regular(path)
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[name for name in ("task", "a", "censored") if name in names])
    except (DataError, OSError, ValueError):
        return None  # a copy of the leaderboard without its per-query files: no histogram


def _plots(suite: Suite, base: Path, out: Path) -> tuple[dict[str, str], list[Path]]:
    """Draw the suite's figures into ``out/plots/<suite>/``; ``{key: relative path}`` and the files.

    Keys: ``curves`` (every entry with R@K values), and for computed entries ``matrix:<entry>``
    and ``difficulty:<entry>`` (when its per-query file, relative to ``base``, is there).
    MissingExtraError when matplotlib is not installed.
    """
    from ropebench.render import plots

    plots.require_matplotlib()
    folder = out / "plots" / suite.name
    folder.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, str] = {}
    written: list[Path] = []

    def keep(key: str, figure: Any, stem: str) -> None:
        (path,) = plots.save(figure, folder / stem, ("svg",))
        drawn[key] = f"plots/{quote(suite.name)}/{quote(path.name)}"
        written.append(path)

    with_recall = [entry for entry in suite.entries
                   if any(key.startswith("R@") for task in entry["results"].values() for key in task)]
    if with_recall:
        keep("curves", plots.curves(with_recall, labels=[_plain(e["label"]) for e in with_recall]), "curves")
    # Heatmaps for computed entries only: a published entry's matrix is in the tables already,
    # and each figure costs a fraction of a second to draw.
    for entry in suite.entries:
        if entry["kind"] == "computed" and any(MATRIX_MEASURE in task for task in entry["results"].values()):
            figure = plots.matrix(entry, measure=MATRIX_MEASURE, title=f"{MATRIX_MEASURE}: {_plain(entry['label'])}")
            keep(f"matrix:{entry['name']}", figure, f"{entry['name']}-matrix")
        table = _first_hits(entry, base) if entry["kind"] == "computed" else None
        if table is not None and table.num_rows:
            figure = plots.difficulty(table, ks=entry["protocol"]["ks"], title=_plain(entry["label"]))
            keep(f"difficulty:{entry['name']}", figure, f"{entry['name']}-difficulty")
    return drawn, written


_FILTERS = """\
<form id="filters" aria-label="Filter entries"><strong>Show only:</strong>
<label><input type="checkbox" id="only-zero-shot"> zero-shot models</label>
<label><input type="checkbox" id="only-rope-train"> models trained on ROPE's train split</label>
<label>bytes per item ≤ <select id="max-bytes"><option value="">any</option><option value="32">32</option>
<option value="128">128</option><option value="512">512</option><option value="2048">2048</option></select></label>
<label>parameters ≤ <select id="max-parameters"><option value="">any</option><option value="100000000">100M</option>
<option value="1000000000">1B</option><option value="10000000000">10B</option></select></label>
<span class="note">(entries without the metadata a filter needs are hidden by it)</span>
</form>"""


def _models_table(suite: Suite) -> Table:
    """One row per entry: its model, size, embedding storage and training data (the metadata)."""
    from ropebench.leaderboard.metadata import effective_model, training_text
    from ropebench.render.tables import Row

    rows = []
    for entry in suite.entries:
        model = effective_model(entry)
        protocol: Mapping[str, Any] = entry["protocol"] if isinstance(entry.get("protocol"), Mapping) else {}
        described = " · ".join(str(part) for part in (
            model.get("name"), f"d={model['embedding_dim']}" if model.get("embedding_dim") else None,
            model.get("embedding_dtype"), f"compressed {protocol['compression']}" if protocol.get("compression")
            else None, training_text(entry) if training_text(entry) != "–" else None) if part) or "–"
        values = tuple(float(model[key]) if isinstance(model.get(key), int) else None
                       for key in ("parameters", "bytes_per_item"))
        rows.append(Row(group=entry["kind"], entry=entry["name"], label=entry["label"], label_latex=None,
                        values=values, tag=described))
    return Table(kind="models", key=f"{suite.name}-models", title="Models",
                 caption="What each entry is: model, embedding, training data (leaderboard add --metadata).",
                 group_header="kind", label_header=suite.label_column, label_name=suite.label_column,
                 value_headers=("parameters", "bytes/item"), rows=tuple(rows), tag_header="model and training")


def _ranked_tables(suite: Suite, base: Path) -> tuple[list[Table], Table | None]:
    """Table 1/2, with rank intervals and the ranking table when the suite has computed entries with
    per-query files (else the tables as they are, and None)."""
    import dataclasses

    from ropebench.leaderboard.ranking import ranks_note, ranks_table, suite_ranking, with_note, with_ranks

    tables = suite_tables(suite)
    try:
        ranking = suite_ranking(suite, base=base)
    except (UsageError, DataError, OSError):
        return tables, None  # no per-query data here (published entries, or a copy without the files)
    if len(ranking.entries) < 2:
        return tables, None
    note = ranks_note(ranking)
    tables = [dataclasses.replace(with_ranks(t, ranking), caption=with_note(t.caption, note)) for t in tables]
    return tables, ranks_table(suite, ranking, key=suite.name)


def _suite_page(suite: Suite, figures: dict[str, str], missing_plots: str | None, base: Path) -> str:
    title = f"{suite.name}: {suite.spec['title']}"
    body = ['<p><a href="index.html">All suites</a></p>', f"<h1>{_esc(title)}</h1>"]
    if suite.spec.get("description"):
        body.append(f"<p>{_prose(suite.spec['description'])}</p>")
    if suite.spec.get("protocol"):
        body.append(f"<p>Protocol: {_esc(_describe(suite.spec['protocol']))}.</p>")
    body.append("<p>Click a column header to sort the rows by it.</p>")
    entries = {entry["name"]: entry for entry in suite.entries}
    tables, ranked = _ranked_tables(suite, base)
    body += ["<h2>Models</h2>", _FILTERS, _table(_models_table(suite), entries)]
    if ranked is not None:
        body += ["<h2>Ranks</h2>", _table(ranked, entries)]
    body += ["<h2>Tables</h2>", *(_table(table, entries) for table in tables)]
    if any(entry.get("fewshot") for entry in suite.entries):  # the paper's second task (docs/fewshot.md)
        from ropebench.render.tables import fewshot_table

        body += ["<h2>Few-shot classification</h2>",
                 _table(fewshot_table(suite.entries, label_column=suite.spec.get("label_column", "label"),
                                      key=f"{suite.name}"), entries)]
    body += [f"<h2>Domain matrices ({MATRIX_MEASURE})</h2>", '<div class="matrices">',
             *(_table(entry_matrix(suite, entry, MATRIX_MEASURE), entries) for entry in suite.entries), "</div>"]
    body.append("<h2>Plots</h2>")
    if missing_plots:
        body.append(f'<p class="note">No plots: {_esc(missing_plots)}.</p>')
    elif "curves" in figures:
        body.append(_figure(figures["curves"], f"R@K against K for every entry of {suite.name}",
                            "R@K against K (log scale), one panel per task."))
    body.append("<h2>Entries</h2>")
    for entry in suite.entries:
        body += [f'<section class="entry" id="entry-{_esc(entry["name"])}">',
                 f"<h3>{_esc(entry['label'])} <small>({_esc(entry['name'])})</small></h3>",
                 f"<p>{_prose(entry['description'])}</p>", *_provenance(entry)]
        if f"matrix:{entry['name']}" in figures:
            body.append(_figure(figures[f"matrix:{entry['name']}"], f"{MATRIX_MEASURE} matrix of {entry['label']}",
                                f"{MATRIX_MEASURE}: query domain (rows) × gallery domain (columns), scale 0–100."))
        if f"difficulty:{entry['name']}" in figures:
            body.append(_figure(figures[f"difficulty:{entry['name']}"], f"First-hit ranks of {entry['label']}",
                                "First-hit rank (a + 1) per task, grouped by the Ks; grey: beyond max K."))
        body.append("</section>")
    return _page(title, body)


def _index_page(suites: Sequence[Suite]) -> str:
    rows = []
    for order, suite in enumerate(suites):
        kinds = sorted({str(entry["kind"]) for entry in suite.entries})
        rows.append(f'<tr data-entry="{_esc(suite.name)}"><th scope="row" data-sort="{order}">'
                    f'<a href="{_esc(quote(suite.name))}.html">{_esc(suite.name)}</a></th>'
                    f"<td>{_esc(suite.spec['title'])}</td>"
                    f'<td class="num" data-sort="{len(suite.entries)}">{len(suite.entries)}</td>'
                    f"<td>{_esc(', '.join(kinds))}</td></tr>")
    head = _head([("suite", "order"), ("title", "text"), ("entries", "num"), ("kinds", "text")])
    table = ['<table class="sortable" id="suites">', "<caption>Leaderboard suites</caption>", head,
             "<tbody>", *rows, "</tbody>", "</table>"]
    intro = ("<p>Cross-domain product retrieval on ROPE: product pages (P), short videos (V) and live "
             "streams (L). Each suite is one test set evaluated under one protocol.</p>")
    return _page("ropebench leaderboards", ["<h1>ropebench leaderboards</h1>", intro, *table])


def _check_out(root: Path, out: Path) -> None:
    """Refuse an output that would overwrite the leaderboard or a directory this module did not build."""
    root_real, out_real = root.resolve(), out.resolve()
    if out_real == root_real or out_real in root_real.parents or root_real in out_real.parents:
        raise UsageError(f"--out {out}: the site cannot be written over or inside the leaderboard ({root}); "
                         "choose a directory outside it, e.g. --out site")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"--out {out} is a non-empty directory that `ropebench leaderboard site` did not build; "
                         "refusing to replace it: choose a new or empty directory")


def build_site(root: Path, out: Path, *, plots: bool = True) -> list[Path]:
    """Write the static site of every suite under ``root`` (the ``leaderboards/`` directory) to ``out``.

    The site is built in a sibling directory and then moved into place, so ``out`` holds either
    the previous site or the new one, never half of one. A directory ``out`` is replaced only if
    an earlier build made it (it holds the :data:`MARKER` file).

    Args:
        root: the leaderboards directory (see :func:`ropebench.leaderboard.find_root`).
        out: the site's directory (created; its parent too).
        plots: draw figures when matplotlib is installed; without it, or with ``plots=False``,
            each page says why it has none.

    Returns:
        The pages (``index.html`` first), the icon and the figures written, as paths inside ``out``.

    Raises:
        DataError: a suite does not load (the message lists every problem).
        UsageError: ``out`` is unsafe to replace.
    """
    root, out = Path(root), Path(out)
    _check_out(root, out)
    suites = [load_suite(root, name) for name in suite_names(root)]
    if not suites:
        raise UsageError(f"{root}: no suite found (a suite is a directory holding suite.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    staging = out.parent / f".{out.name}.{token}.tmp"
    staging.mkdir()  # mkdir, not mkdtemp: the site gets the user's umask, not mode 0700
    try:
        pages, figures_written = [staging / "index.html"], []
        pages[0].write_text(_index_page(suites), encoding="utf-8")
        for suite in suites:
            figures: dict[str, str] = {}
            missing = None if plots else "this site was built without plots (--no-plots)"
            if plots:
                try:
                    figures, files = _plots(suite, root.parent, staging)
                    figures_written += files
                except MissingExtraError:
                    missing = ("matplotlib is not installed where this site was built: "
                               "pip install 'ropebench[plot]' and rebuild it")
            pages.append(staging / f"{suite.name}.html")
            pages[-1].write_text(_suite_page(suite, figures, missing, root.parent), encoding="utf-8")
        pages.append(staging / "favicon.svg")
        pages[-1].write_text(_ICON, encoding="utf-8")
        (staging / MARKER).write_text("built by ropebench leaderboard site\n", encoding="utf-8")
        if out.exists():
            previous = out.parent / f".{out.name}.{token}.old"
            os.replace(out, previous)
            try:
                os.replace(staging, out)
            except BaseException:
                os.replace(previous, out)  # put the old site back
                raise
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out / path.relative_to(staging) for path in pages + figures_written]
