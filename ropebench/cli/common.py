"""Option decorators shared by the commands; every choice comes from :mod:`ropebench.protocol`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ropebench.protocol import METRICS, TIE_POLICIES

__all__ = ["root_option", "writable_root_option", "metric_option", "ties_option", "ks_option", "tasks_option",
           "quiet_option", "threads_option", "progress_wanted", "BadInput"]

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """A RopebenchError shown as ``Error: …`` with exit code 2."""

    exit_code = 2


def progress_wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def root_option(command: F) -> F:
    return click.option(
        "--root", type=click.Path(), default=None,
        help="The leaderboards/ directory [default: ./leaderboards if present, else the copy "
             "shipped with ropebench].")(command)


def writable_root_option(command: F) -> F:
    """``--root`` of the commands that change a leaderboard: never the copy shipped with ropebench."""
    return click.option(
        "--root", type=click.Path(), default=None,
        help="The leaderboards/ directory to change [default: ./leaderboards in the current directory; the copy "
             "shipped with ropebench is read-only: pass --root DIR or run from your repository].")(command)


def metric_option(command: F) -> F:
    return click.option(
        "--metric", type=click.Choice(METRICS), default="cosine", show_default=True,
        help="Similarity the search ranks by: cosine (L2-normalised copy), ip (inner product), "
             "l2 (negative squared distance).")(command)


def ties_option(command: F) -> F:
    return click.option(
        "--ties", type=click.Choice(TIE_POLICIES), default="expected", show_default=True,
        help="How equal scores are ranked: expected (uniformly random, in expectation), "
             "pessimistic, optimistic.")(command)


def ks_option(command: F) -> F:
    return click.option("--ks", default="1,5,10,20,50", show_default=True,
                        help="Cut-offs K for R@K; MRR@K uses the largest.")(command)


def _join_repeated(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str | None:
    # A repeated --tasks accumulates (--tasks P2V --tasks V2P == --tasks P2V,V2P): never keep only the last.
    return ",".join(value) if value else None


def tasks_option(command: F) -> F:
    return click.option("--tasks", multiple=True, callback=_join_repeated,
                        help="Tasks: codes (P2V,V2P), groups (cross, intra, all) or both; repeatable "
                             "[default: all nine].")(command)


def threads_option(command: F) -> F:
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="Worker and BLAS threads [default: all cores].")(command)


def quiet_option(command: F) -> F:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar and no messages on stderr.")(command)
