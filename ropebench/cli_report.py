"""Commands ``ropebench table`` and ``ropebench leaderboard`` (being written; registered by cli.py)."""

from __future__ import annotations

import click

__all__ = ["table", "leaderboard"]


@click.command()
def table() -> None:
    """Render the paper's tables from leaderboard entries."""
    raise click.ClickException("not implemented yet")


@click.group()
def leaderboard() -> None:
    """Add entries to the leaderboard and verify it."""
