"""Command ``ropebench leaderboard site``: the leaderboard as a static site.

A thin adapter over :func:`ropebench.leaderboard.site.build_site`; attached to the
``leaderboard`` group. Prints every file written on stdout; bad input raises
:class:`~ropebench.errors.RopebenchError` (the main group prints it and exits 2).
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["site"]


@click.command("site")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the site (created; replaced only if an earlier build made it).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="The leaderboards/ directory [default: ./leaderboards if present, else the copy "
                   "shipped with ropebench].")
@click.option("--no-plots", is_flag=True, help="Leave out the figures (they need the extra ropebench[plot]).")
def site(out: Path, root: str | None, no_plots: bool) -> None:
    """Write the leaderboard as a static site to --out: an index of suites and one page per suite.

    Each suite's page has Table 1, Table 2 and every entry's domain matrix (sortable by any
    column), the plots (with matplotlib installed) and each entry's provenance. The pages load
    nothing from the network: copy the directory to any static host.

    \b
    Example:
      ropebench leaderboard site --out site
      python -m http.server --directory site 8000    # then open http://127.0.0.1:8000/
    """
    from ropebench.leaderboard import find_root
    from ropebench.leaderboard.site import build_site

    for path in build_site(find_root(root), out, plots=not no_plots):
        click.echo(str(path))
