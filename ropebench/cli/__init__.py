"""The ``ropebench`` command line: thin commands over the Python API.

Data goes to stdout; progress and messages to stderr. Exit codes: 0 ok, 1 a check failed,
2 bad input or usage (any :class:`~ropebench.errors.RopebenchError`, never a traceback).
Subcommands live in their own modules and are imported only when used (keeps ``--help`` fast
and torch out of every command but ``baseline``).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from ropebench import __version__
from ropebench.cli.common import BadInput
from ropebench.errors import RopebenchError

__all__ = ["cli", "main"]

COMMANDS = {
    "evaluate": "ropebench.cli.evaluate:evaluate",
    "validate": "ropebench.cli.evaluate:validate",
    "table": "ropebench.cli.table:table",
    "leaderboard": "ropebench.cli.leaderboard:leaderboard",
    "compare": "ropebench.cli.compare:compare",
    "convert": "ropebench.cli.convert:convert",
    "plot": "ropebench.cli.plot:plot",
    "baseline": "ropebench.baseline.cli:baseline",
}


class RopebenchGroup(click.Group):
    """Loads the subcommands on use and turns library errors into exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._load(name)

    def _load(self, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                return None  # that part of ropebench is not there
            raise
        command: click.Command | None = getattr(module, attribute, None)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RopebenchError as error:
            raise BadInput(str(error)) from None
        except RecursionError:
            raise BadInput("an input is nested too deeply to be read (is it a valid file?)") from None


@click.group(cls=RopebenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ropebench")
def cli() -> None:
    """Evaluate cross-domain product retrieval on ROPE (product pages P, short videos V, live streams L).

    \b
    Example:
      ropebench evaluate sample_embeddings/cls_cd.parquet --manifest sample_embeddings/manifest.parquet
      ropebench validate my_submission.parquet --manifest test_manifest.parquet
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ropebench")
