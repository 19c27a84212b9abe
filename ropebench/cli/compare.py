"""``ropebench compare A B``: is evaluation A really better than evaluation B?"""

from __future__ import annotations

import click

from ropebench.compare import CORRECTIONS, TESTS, UNITS
from ropebench.render.comparison import FORMATS

__all__ = ["compare", "compare_command"]


@click.command("compare")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--unit", type=click.Choice(UNITS), default="product", show_default=True,
              help="What is resampled: products (the queries of a product share their relevant items) or "
                   "single queries (as query-level tools do).")
@click.option("--test", type=click.Choice(TESTS), default="randomization", show_default=True,
              help="Paired sign-flip randomization test, centred bootstrap test, or cluster-robust t-test.")
@click.option("--resamples", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Sign flips and bootstrap resamples (B).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the resampling matrices (one draw serves every cell).")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Significance level.")
@click.option("--correction", type=click.Choice(CORRECTIONS), default="holm", show_default=True,
              help="Multiplicity correction over the task × measure cells (the primary hypothesis is never "
                   "adjusted).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="What stdout shows.")
@click.option("--out", type=click.Path(), default=None,
              help="Also write the comparison JSON (schema ropebench.comparison/1) to this file.")
def compare(a: str, b: str, unit: str, test: str, resamples: int, seed: int, alpha: float, correction: str,
            fmt: str, out: str | None) -> None:
    """Compare evaluations A and B of the same test set, query by query.

    A and B are results files (written with their per-query data) or per-query parquet files
    (`ropebench evaluate --per-query`), under the same tie policy and Ks. Prints, per task and
    measure, A, B, their difference Δ (points) with its 95% interval, the p-value and its Holm
    adjustment, and wins/ties/losses over queries; the primary hypothesis (mean R@1 over the six
    cross-domain tasks) comes first. Products, not queries, are resampled by default.

    \b
    Example:
      ropebench compare with_cd.per_query.parquet without_cd.per_query.parquet
      ropebench compare runs/a.json runs/b.json --format markdown --out comparison.json
    """
    from ropebench.compare import compare as run_compare
    from ropebench.io.safety import check_output_paths, inputs_and_records, regular_input
    from ropebench.render.comparison import render_comparison

    for label, path in (("A", a), ("B", b)):
        regular_input(path, label, fix="pass a results JSON (`ropebench evaluate --out`) or a per-query parquet file")
    # Not only A and B: the per-query files (and submissions) they record must survive too.
    check_output_paths({"--out": out}, inputs_and_records({"input A": a, "input B": b}))
    result = run_compare(a, b, unit=unit, test=test, resamples=resamples, seed=seed, alpha=alpha,
                         correction=correction)
    if out is not None:
        from ropebench.io.files import atomic_write_text

        atomic_write_text(out, result.dumps())  # temp file + os.replace: never a half-written file
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(render_comparison(result, fmt), nl=False)


compare_command = compare
