"""``ropebench leaderboard init|add|verify|render|list|site``: a thin layer over :mod:`ropebench.leaderboard`.

Bad input raises :class:`~ropebench.errors.RopebenchError` (exit 2); a failed ``verify`` exits 1.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from ropebench import leaderboard as lb
from ropebench.cli.common import ks_option, metric_option, root_option, ties_option, writable_root_option
from ropebench.errors import UsageError
from ropebench.leaderboard.metadata import describe_model, training_text
from ropebench.protocol import DOMAINS, parse_ks

__all__ = ["leaderboard"]

_EXTRA = {"site": "ropebench.cli.site:site"}  # commands kept in their own modules, loaded when present


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(n for n in _EXTRA if self.get_command(ctx, n))})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in _EXTRA:
            module, attribute = _EXTRA[name].split(":")
            try:
                command = getattr(importlib.import_module(module), attribute, None)
            except ModuleNotFoundError:
                return None
        return command


@click.group("leaderboard", cls=_Group)
def leaderboard() -> None:
    """Create suites, add entries, verify the leaderboard, re-render it.

    Entries live in leaderboards/<suite>/<entry>.json (see docs/leaderboard.md).

    \b
    Example:
        ropebench leaderboard list
        ropebench leaderboard verify
    """


@leaderboard.command("init")
@click.argument("suite")
@click.option("--manifest", default=None, type=click.Path(),
              help="The manifest the suite is about (its sha256 and counts are recorded).")
@click.option("--items", default=None, metavar="P,V,L",
              help="Items per domain, when the manifest is not public, e.g. 31388,29810,30981.")
@click.option("--products", default=None, type=click.IntRange(min=1), help="Number of products (with --items).")
@click.option("--title", default=None, help="One line shown above the suite's tables [default: SUITE].")
@click.option("--description", default="", help="A sentence on the test set.")
@click.option("--label-column", default="model", show_default=True, help="Header of the row-label column.")
@metric_option
@ties_option
@ks_option
@click.option("--root", type=click.Path(), default="leaderboards", show_default=True,
              help="The leaderboards/ directory (created if missing); entries' paths are relative to its parent.")
def init(suite: str, manifest: str | None, items: str | None, products: int | None, title: str | None,
         description: str, label_column: str, metric: str, ties: str, ks: str, root: str) -> None:
    """Create a suite of your own, declaring the test set it is about.

    With --manifest the suite records the manifest's sha256 (and its path when it lies below the
    directory holding --root) and its item and product counts; with --items and --products it
    records counts only (a manifest that is not public). `add` then refuses results computed on
    anything else. Writes ROOT/SUITE/suite.json and the suite's block of ROOT/README.md.

    \b
    Example:
        ropebench leaderboard init my-test --manifest data/manifest.parquet --root leaderboards
        ropebench leaderboard init rope-test-copy --items 31388,29810,30981 --products 2527
    """
    counts = None
    if items is not None:
        parts = items.split(",")
        if len(parts) != len(DOMAINS) or not all(p.strip().isdigit() for p in parts):
            raise UsageError(f"--items {items!r}: give the number of items of P, V and L, e.g. 31388,29810,30981")
        counts = dict(zip(DOMAINS, (int(p) for p in parts)))
    if (items is None) != (products is None) and manifest is None:
        raise UsageError("--items and --products go together (or pass --manifest)")
    protocol = {"metric": metric, "ties": ties, "ks": list(parse_ks(ks)), "search": "exact"}
    _check_root_place(Path(root))
    if manifest is not None:
        from ropebench.io.safety import regular_input

        if not Path(manifest).is_dir():  # a per-domain directory manifest is read by the library
            regular_input(manifest, "--manifest", fix="give the manifest parquet file the suite is about")
    path = lb.init_suite(Path(root), suite, manifest=manifest, items=counts, products=products, title=title,
                         description=description, label_column=label_column, protocol=protocol)
    spec = lb.read_json(path)
    about = ", ".join(f"{spec['items'][d]:,} {d}" for d in DOMAINS) + f" items, {spec['products']:,} products"
    if spec.get("manifest"):
        about += f", manifest sha256 {spec['manifest']['sha256']}"
    click.echo(f"created suite {suite} ({about}): {path}; rendered {Path(root) / lb.README}", err=True)


def _check_root_place(root: Path) -> None:
    """init creates --root if needed: refuse, before anything is written, a root that is a file or
    lies below one or in a directory that cannot be written."""
    from ropebench.io.safety import unwritable_parent

    if root.exists() and not root.is_dir():
        raise UsageError(f"--root {root}: is a file, not a directory. Fix: name the leaderboards/ directory, e.g. "
                         "--root leaderboards")
    blocked = None if root.is_dir() else unwritable_parent(root)
    if blocked is not None:
        why = "not a directory" if blocked.exists() and not blocked.is_dir() else "not writable"
        raise UsageError(f"--root {root}: cannot be created ({blocked} is {why}). Fix: choose a directory in a "
                         "writable place")


@leaderboard.command("add")
@click.argument("results", type=click.Path())
@click.option("--suite", required=True, help="Suite to add to, e.g. rope-sim.")
@click.option("--name", required=True, help="Entry name (file name): lower-case, digits, .-_")
@click.option("--label", required=True, help="Row label in the tables (one line), e.g. 'w L_cd'.")
@click.option("--label-latex", default=None, help="Row label in LaTeX tables.")
@click.option("--description", default="", help="One sentence on the model.")
@click.option("--source", default=None, help="Paper, URL or commit [default: ropebench version].")
@click.option("--submission", default=None, type=click.Path(dir_okay=True),
              help="The submission, when the path recorded in RESULTS is not valid here.")
@click.option("--manifest", default=None, type=click.Path(),
              help="The manifest, when the path recorded in RESULTS is not valid here.")
@click.option("--metadata", default=None, type=click.Path(dir_okay=False),
              help="JSON file with 'model' (name, parameters, embedding_dim, embedding_dtype, bytes_per_item) "
                   "and/or 'training_data' (rope_train, other, zero_shot); re-add with --force to edit it.")
@click.option("--force", is_flag=True, help="Replace an existing entry of that name.")
@writable_root_option
def add(results: str, suite: str, name: str, label: str, label_latex: str | None,
        description: str, source: str | None, submission: str | None, manifest: str | None,
        metadata: str | None, force: bool, root: str | None) -> None:
    """Add a computed entry from a results file written by `ropebench evaluate --out`.

    Refused, naming the field and what differs, when the result was computed on another test set
    than the suite's (manifest sha256, items per domain, products), with another protocol
    (metric, ties, ks, approximate search), when a referenced file changed since evaluation or
    lies outside the directory holding the leaderboard, when the label is not one line or is
    taken, or when the entry exists (unless --force). The entry, its per-query file (when the
    results record one), suite.json and the README block are written as one transaction under a
    lock: concurrent adds wait for each other, and an interrupted add leaves the old leaderboard
    or the new one.

    \b
    Example:
        ropebench evaluate sample_embeddings/cls_cd.parquet \\
            --manifest sample_embeddings/manifest.parquet --out cls_cd.json --per-query cls_cd.parquet
        ropebench leaderboard add cls_cd.json --suite rope-sim --name cls-cd --label 'w L_cd' --force
        ropebench leaderboard add cls_cd.json --suite rope-sim --name cls-cd --label 'w L_cd' \
            --metadata model.json --force
    """
    root_dir = lb.find_root(root, for_writing=True)
    path = lb.add_entry(results, root=root_dir, suite=suite, name=name, label=label,
                        description=description, source=source, label_latex=label_latex,
                        submission=submission, manifest=manifest, force=force, metadata=metadata)
    click.echo(f"added {suite}/{name}: {path}; re-rendered {root_dir / lb.README}", err=True)


@leaderboard.command("verify")
@click.option("--suite", "suites", multiple=True, help="Only this suite (repeatable).")
@root_option
def verify(suites: tuple[str, ...], root: str | None) -> None:
    """Check every entry; re-evaluate computed ones; compare the rendered leaderboard.

    Schema of every suite and entry; files suite.json does not list; the test set of every
    computed entry against the suite's declaration; the files' sha256 (inside the directory
    holding the leaderboard, never through links out of it); stored per-query files; a
    re-evaluation that must reproduce every stored cell within one query's worth (100/n_queries
    percentage points) and every count exactly; published entries are schema-checked only.
    Lists every problem and exits 1 if there is any.

    \b
    Example:
        ropebench leaderboard verify
        ropebench leaderboard verify --suite rope-sim
    """
    report = lb.verify(lb.find_root(root), list(suites) or None)
    if report.ok:
        click.echo(report.summary())
        return
    for problem in report.problems:
        click.echo(problem)
    click.echo(f"verify failed: {len(report.problems)} problem(s)", err=True)
    raise SystemExit(1)


@leaderboard.command("render")
@click.option("--suite", "suites", multiple=True, help="Only this suite (repeatable).")
@writable_root_option
def render_command(suites: tuple[str, ...], root: str | None) -> None:
    """Rewrite the generated leaderboard blocks of leaderboards/README.md.

    Needed after editing an entry or suite.json by hand; `add` and `init` do it by themselves.

    \b
    Example:
        ropebench leaderboard render
    """
    path = lb.render_readme(lb.find_root(root, for_writing=True), list(suites) or None)
    click.echo(f"rendered {path}", err=True)


@leaderboard.command("list")
@root_option
def list_command(root: str | None) -> None:
    """List suites and their entries (suite, entry, kind, label, tasks, then the metadata).

    Tab-separated columns: suite, entry, kind, label, tasks, model (name; parameters; d and dtype;
    bytes per item; compression), training data (zero-shot, ROPE train, other).

    \b
    Example:
        ropebench leaderboard list
    """
    root_dir = lb.find_root(root)
    for name in lb.suite_names(root_dir):
        for entry in lb.load_suite(root_dir, name).entries:
            click.echo("\t".join([name, entry["name"], entry["kind"], entry["label"],
                                  ",".join(entry["results"]), describe_model(entry), training_text(entry)]))
