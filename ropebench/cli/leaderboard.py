"""``ropebench leaderboard add|verify|render|list|site``: a thin layer over :mod:`ropebench.leaderboard`.

Bad input raises :class:`~ropebench.errors.RopebenchError` (exit 2); a failed ``verify`` exits 1.
"""

from __future__ import annotations

import click

from ropebench import leaderboard as lb
from ropebench.cli.common import root_option

__all__ = ["leaderboard"]


@click.group("leaderboard")
def leaderboard() -> None:
    """Add entries to the leaderboard, verify it, re-render it.

    Entries live in leaderboards/<suite>/<entry>.json (see leaderboards/README.md).

    \b
    Example:
        ropebench leaderboard list
        ropebench leaderboard verify
    """


@leaderboard.command("add")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--suite", required=True, help="Suite to add to, e.g. rope-sim.")
@click.option("--name", required=True, help="Entry name (file name): lower-case, digits, .-_")
@click.option("--label", required=True, help="Row label in the tables, e.g. 'w L_cd'.")
@click.option("--label-latex", default=None, help="Row label in LaTeX tables.")
@click.option("--description", default="", help="One sentence on the model.")
@click.option("--source", default=None, help="Paper, URL or commit [default: ropebench version].")
@click.option("--submission", default=None, type=click.Path(dir_okay=True),
              help="The submission, when the path recorded in RESULTS is not valid here.")
@click.option("--manifest", default=None, type=click.Path(dir_okay=False),
              help="The manifest, when the path recorded in RESULTS is not valid here.")
@click.option("--force", is_flag=True, help="Replace an existing entry of that name.")
@root_option
def add(results: str, suite: str, name: str, label: str, label_latex: str | None,
        description: str, source: str | None, submission: str | None, manifest: str | None,
        force: bool, root: str | None) -> None:
    """Add a computed entry from a results file written by `ropebench evaluate --out`.

    Refused, naming the field, when the protocol differs from the suite's (metric, ties, ks,
    approximate search, another manifest), when a referenced file changed since evaluation or
    lies outside the repository, or when the entry exists (unless --force). Records the files'
    sha256, writes atomically and re-renders the suite's block of leaderboards/README.md.

    \b
    Example:
        ropebench evaluate sample_embeddings/cls_cd.parquet \\
            --manifest sample_embeddings/manifest.parquet --out cls_cd.json
        ropebench leaderboard add cls_cd.json --suite rope-sim --name cls-cd --label 'w L_cd'
    """
    root_dir = lb.find_root(root)
    path = lb.add_entry(results, root=root_dir, suite=suite, name=name, label=label,
                        description=description, source=source, label_latex=label_latex,
                        submission=submission, manifest=manifest, force=force)
    click.echo(f"added {suite}/{name}: {path}; re-rendered {root_dir / lb.README}", err=True)


@leaderboard.command("verify")
@click.option("--suite", "suites", multiple=True, help="Only this suite (repeatable).")
@root_option
def verify(suites: tuple[str, ...], root: str | None) -> None:
    """Check every entry; re-evaluate computed ones; compare the rendered leaderboard.

    Schema of every entry; for computed entries the files' sha256 and a re-evaluation that must
    reproduce every stored cell within one query's worth (100/n_queries percentage points) and
    every count exactly; published entries are schema-checked only. Lists every problem and
    exits 1 if there is any.

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
@root_option
def render_command(suites: tuple[str, ...], root: str | None) -> None:
    """Rewrite the generated leaderboard blocks of leaderboards/README.md.

    Needed after editing an entry by hand; `add` does it by itself.

    \b
    Example:
        ropebench leaderboard render
    """
    path = lb.render_readme(lb.find_root(root), list(suites) or None)
    click.echo(f"rendered {path}", err=True)


@leaderboard.command("list")
@root_option
def list_command(root: str | None) -> None:
    """List suites and their entries (suite, entry, kind, label, tasks).

    \b
    Example:
        ropebench leaderboard list
    """
    root_dir = lb.find_root(root)
    for name in lb.suite_names(root_dir):
        for entry in lb.load_suite(root_dir, name).entries:
            click.echo("\t".join([name, entry["name"], entry["kind"], entry["label"],
                                  ",".join(entry["results"])]))
