"""``ropebench baseline simulate|train``: the reference baseline's command line.

Registered on the main group by ``ropebench.cli``. This module imports neither torch nor the
trainer: ``train`` loads them when it runs, so ``--help`` and ``simulate`` work without torch
and ``train`` without torch fails with one line naming the install command (exit 2).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ropebench.baseline.config import LOSSES, TrainConfig
from ropebench.baseline.simulate import SimulationConfig

__all__ = ["baseline"]

_DEFAULTS = TrainConfig()


@click.group()
def baseline() -> None:
    """Reference baseline: simulate ROPE-like features, train a COPE-style model (train needs torch).

    Reproduces the paper's ablation: a classification loss alone (cls) retrieves well inside a
    domain but hardly across domains; adding the cross-domain contrastive loss (cls+cd) unifies
    the domains.

    \b
    Example:
      ropebench baseline simulate --out sim
      ropebench baseline train sim --loss cls --out cls.parquet --eval
      ropebench baseline train sim --loss cls+cd --out cls_cd.parquet --eval
    """


@baseline.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for train.parquet, test.parquet and test_manifest.parquet.")
@click.option("--products", type=click.IntRange(min=10), default=SimulationConfig.products,
              show_default=True, help="Number of products (10% become unseen test products).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of np.random.default_rng.")
@click.option("--quiet", "-q", is_flag=True, help="No summary on stderr.")
def simulate(out: str, products: int, seed: int, quiet: bool) -> None:
    """Write ROPE-like per-item features for the baseline (NumPy only; no torch needed).

    Each product has a latent identity; each domain (P, V, L) sees it through its own random
    non-linear view plus nuisance and noise, so raw features match within a domain and not
    across. Train and test are split by product. Files: OUT/train.parquet (item_id, domain,
    product_id, features), OUT/test.parquet (item_id, domain, features) and
    OUT/test_manifest.parquet (item_id, domain, product_id). Same seed, same bytes.

    \b
    Example:
      ropebench baseline simulate --out sim
      ropebench baseline simulate --out sim_small --products 500 --seed 1
    """
    from ropebench.baseline.simulate import simulate as run_simulation
    from ropebench.baseline.simulate import write_simulation

    simulation = run_simulation(SimulationConfig(products=products), seed=seed)
    paths = write_simulation(simulation, out)
    if not quiet:
        for name, split in (("train.parquet", simulation.train), ("test.parquet", simulation.test)):
            n_products = len(set(split["product_id"].tolist()))
            click.echo(f"wrote {paths[name]} ({len(split['item_id'])} items, {n_products} products)",
                       err=True)
        click.echo(f"wrote {paths['test_manifest.parquet']}", err=True)


@baseline.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--loss", type=click.Choice(LOSSES), required=True,
              help="cls: classification only (per-domain classifiers); cls+cd: plus the cross-domain "
                   "contrastive loss L_cd.")
@click.option("--out", "-o", required=True, type=click.Path(),
              help="Submission parquet to write (item_id, embedding) for DATA_DIR/test.parquet.")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULTS.epochs, show_default=True)
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Seeds weights and batches; same seed, same embeddings bit for bit.")
@click.option("--dim", type=click.IntRange(min=1), default=_DEFAULTS.dim, show_default=True,
              help="Embedding size.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Storage type of the embeddings (float16 halves the file).")
@click.option("--threads", type=click.IntRange(min=1), default=_DEFAULTS.threads, show_default=True,
              help="torch CPU threads (fixed, so results do not depend on the machine's cores).")
@click.option("--eval", "evaluate_after", is_flag=True,
              help="Evaluate the written file against DATA_DIR/test_manifest.parquet and print the matrix.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or log lines.")
def train(data_dir: str, loss: str, out: str, epochs: int, seed: int, dim: int, dtype: str,
          threads: int, evaluate_after: bool, quiet: bool) -> None:
    """Train per-domain encoders into one shared 128-d space and embed the test items (needs torch).

    DATA_DIR is a directory written by `ropebench baseline simulate`. Progress (with the
    running loss) goes to stderr on a terminal; with --eval the nine-task results of
    `ropebench evaluate` go to stdout.

    \b
    Example:
      ropebench baseline train sim --loss cls --out cls.parquet --eval
      ropebench baseline train sim --loss cls+cd --out cls_cd.parquet --dtype float16 --seed 1
    """
    from ropebench.baseline import require_torch

    require_torch()
    from ropebench.baseline.files import write_submission
    from ropebench.baseline.trainer import train as run_training
    from ropebench.io.safety import check_output_paths

    # Fail now, not after the training run: a pipe, a directory, a path below a file, the data itself.
    check_output_paths({"--out": out}, {f"simulated {name}": Path(data_dir) / name
                                        for name in ("train.parquet", "test.parquet", "test_manifest.parquet")})

    config = TrainConfig(loss=loss, epochs=epochs, seed=seed, dim=dim, threads=threads)
    # Through a pipe or into a log, one line per epoch (with an ETA) instead of a silent wait.
    result = run_training(data_dir, config, progress=False if quiet else (None if sys.stderr.isatty() else "epochs"))
    write_submission(out, result.item_ids, result.embeddings, dtype=dtype)
    if not quiet:
        click.echo(f"trained {loss} in {result.seconds:.1f} s ({epochs} epochs, final loss "
                   f"{result.epoch_losses[-1]:.4f}); wrote {out} ({len(result.item_ids)} items, "
                   f"d={dim}, {dtype})", err=True)
    if evaluate_after:
        import ropebench
        from ropebench.render.console import render_evaluation

        manifest = Path(data_dir) / "test_manifest.parquet"
        evaluation = ropebench.evaluate(out, manifest=manifest,
                                        progress=not quiet and sys.stderr.isatty())
        click.echo(render_evaluation(evaluation.to_json(), "text"), nl=False)
