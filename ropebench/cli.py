"""The ``ropebench`` command line: a thin adapter over the Python API (DESIGN.md §7).

Data goes to stdout; progress and messages to stderr. Exit codes: 0 ok, 1 a check failed,
2 bad input or usage (any :class:`~ropebench.errors.RopebenchError`, never a traceback).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ropebench import __version__
from ropebench.errors import RopebenchError

__all__ = ["cli", "main"]

# Subcommands that live in their own modules, imported only when used (keeps --help fast and
# keeps torch out of every command but `baseline`).
_LAZY_COMMANDS = {
    "table": "ropebench.cli_report:table",
    "leaderboard": "ropebench.cli_report:leaderboard",
    "baseline": "ropebench.baseline.cli:baseline",
}


class BadInput(click.ClickException):
    """A RopebenchError shown as ``Error: …`` with exit code 2."""

    exit_code = 2


class RopebenchGroup(click.Group):
    """Loads the lazy subcommands and turns library errors into exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name in _LAZY_COMMANDS if self._load(name) is not None]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._load(name)

    def _load(self, name: str) -> click.Command | None:
        target = _LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                return None  # that part of ropebench is not there
            raise
        return getattr(module, attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RopebenchError as error:
            raise BadInput(str(error)) from None


def _progress_wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@click.group(cls=RopebenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ropebench")
def cli() -> None:
    """Evaluate cross-domain product retrieval on ROPE (product pages P, short videos V, live streams L).

    \b
    Example:
      ropebench evaluate sample_embeddings/cls_cd.parquet --manifest sample_embeddings/manifest.parquet
      ropebench validate my_submission.parquet --manifest test_manifest.parquet
    """


@cli.command()
@click.argument("submission", type=click.Path(dir_okay=True))
@click.option("--manifest", "-m", type=click.Path(dir_okay=True), help="Ground-truth parquet (item_id, domain, "
              "product_id[, group_id]). Without it the submission must carry domain and product_id.")
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default="cosine", show_default=True,
              help="Similarity: cosine (L2-normalised copy), ip (inner product), l2 (negative squared distance).")
@click.option("--ties", type=click.Choice(["expected", "pessimistic", "optimistic"]), default="expected",
              show_default=True, help="How equal scores are ranked (DESIGN.md §2).")
@click.option("--ks", default="1,5,10,20,50", show_default=True, help="Cut-offs K for R@K; MRR uses the largest.")
@click.option("--tasks", default=None, help="Subset of tasks, e.g. P2V,V2P (default: all nine).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write the results JSON here (atomically).")
@click.option("--per-query", type=click.Path(dir_okay=False), help="Write one parquet row per scored query and task.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="What to print on stdout.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="FAISS/BLAS threads [default: all cores].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(submission: str, manifest: str | None, metric: str, ties: str, ks: str, tasks: str | None,
             out: str | None, per_query: str | None, fmt: str, threads: int | None, quiet: bool) -> None:
    """Score SUBMISSION (parquet file or per-domain directory) on the nine retrieval tasks.

    Exact nearest-neighbour search over every query-domain × gallery-domain pair; prints the
    3×3 R@1 matrix and R@K / MRR per task. Nothing is written unless the whole evaluation succeeds.

    \b
    Example:
      ropebench evaluate sample_embeddings/cls_cd.parquet \\
          --manifest sample_embeddings/manifest.parquet --out results.json
      ropebench evaluate sub.parquet -m manifest.parquet --tasks P2V,V2P --ties pessimistic --format json
    """
    import json

    import ropebench

    result = ropebench.evaluate(submission, manifest=manifest, metric=metric, ties=ties, ks=ks, tasks=tasks,
                                threads=threads, per_query=per_query is not None,
                                progress=_progress_wanted(quiet))
    if per_query is not None:
        _write_per_query(result.per_query, per_query)
    if out is not None:
        result.write_json(out)
        if not quiet:
            click.echo(f"wrote {out}", err=True)
    document = result.to_json()
    if fmt == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        from ropebench.report import render_evaluation

        click.echo(render_evaluation(document, fmt), nl=False)


def _write_per_query(frame: Any, path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropebench.files import atomic_write_with

    table = pa.Table.from_pandas(frame, preserve_index=False)
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp))


@cli.command()
@click.argument("submission", type=click.Path(dir_okay=True))
@click.option("--manifest", "-m", type=click.Path(dir_okay=True), help="Ground-truth parquet to check against.")
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default="cosine", show_default=True,
              help="Under cosine, all-zero embeddings are an error.")
def validate(submission: str, manifest: str | None, metric: str) -> None:
    """Check SUBMISSION (and its manifest) without searching; report every problem at once.

    Exit 0 and a short summary when valid; exit 2 with the list of problems otherwise.

    \b
    Example:
      ropebench validate sample_embeddings/cls_cd.parquet --manifest sample_embeddings/manifest.parquet
    """
    import ropebench
    from ropebench.report import render_validation

    dataset = ropebench.validate(submission, manifest=manifest, metric=metric)
    click.echo(render_validation(dataset, submission, manifest), nl=False)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ropebench")
