"""``ropebench convert``: turn COPE shards, ROPE pair files and npz arrays into ropebench files.

Thin adapters over :mod:`ropebench.io.cope` and :mod:`ropebench.io.pairs`. Reports go to
stderr; stdout stays empty (these commands produce files, not data). Library errors propagate
as :class:`~ropebench.errors.RopebenchError`; the ``ropebench`` group turns them into exit 2.
"""

from __future__ import annotations

import click

from ropebench.io.cope import DEFAULT_LIVE_ID

__all__ = ["convert"]

_DOMAIN_PREFIX_HELP = ("Write item ids as P:<id>, V:<id>, L:<id>, for id spaces that overlap across domains "
                       "(give it to both `convert cope` and `convert rope-pairs`).")


@click.group("convert")
def convert() -> None:
    """Convert other formats into ropebench submissions and manifests.

    \b
    Example:
      ropebench convert cope node0/ node1/ --out submission.parquet --manifest manifest.parquet
      ropebench convert rope-pairs pages_pair.txt videos_pair.txt lives_pair.txt --out manifest.parquet
      ropebench convert npz arrays.npz --out submission.parquet
    """


@convert.command("cope", short_help="COPE infer.py shards -> submission parquet.")
@click.argument("directories", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(), help="Submission parquet to write.")
@click.option("--manifest", "-m", type=click.Path(), help="Report per-domain coverage against this manifest, and "
              "validate the output with it when coverage is complete.")
@click.option("--require-complete", is_flag=True, help="A manifest item without an embedding, or an item not in "
              "the manifest, is an error (exit 2) instead of a note.")
@click.option("--live-id", default=DEFAULT_LIVE_ID, show_default=True,
              help="Item id of a live clip, from the fields {live_id}, {starttime}, {endtime}.")
@click.option("--domain-prefix", is_flag=True, help=_DOMAIN_PREFIX_HELP)
def cope(directories: tuple[str, ...], out: str, manifest: str | None, require_complete: bool, live_id: str,
         domain_prefix: bool) -> None:
    """Convert the COPE model's infer.py output DIRECTORIES (one per node) into a submission.

    Reads every N_item (product pages, P), N_photo (short videos, V) and N_live (live clips, L)
    file; duplicates from distributed padding keep their first copy and are counted. The report
    (with coverage per domain when --manifest is given) goes to stderr.

    \b
    Example:
      ropebench convert cope embs/node0 embs/node1 --out cope.parquet --manifest manifest.parquet
      ropebench convert cope embs/ --out cope.parquet --live-id '{live_id}'
    """
    from ropebench.io.cope import convert_cope

    report = convert_cope(list(directories), out, manifest=manifest, require_complete=require_complete,
                          live_id=live_id, domain_prefix=domain_prefix)
    click.echo(report.summary(), err=True, nl=False)


@convert.command("rope-pairs", short_help="ROPE *_pair.txt files -> manifest parquet.")
@click.argument("pages", type=click.Path())
@click.argument("videos", type=click.Path())
@click.argument("lives", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Manifest parquet to write.")
@click.option("--domain-prefix", is_flag=True, help=_DOMAIN_PREFIX_HELP)
def rope_pairs(pages: str, videos: str, lives: str, out: str, domain_prefix: bool) -> None:
    """Convert ROPE's pair files (PAGES, VIDEOS, LIVES: 'product_id, item_id' per line) into a manifest.

    \b
    Example:
      ropebench convert rope-pairs test_product_pages_pair.txt test_product_videos_pair.txt \\
          test_product_lives_pair.txt --out manifest.parquet
    """
    from ropebench.io.pairs import convert_rope_pairs

    report = convert_rope_pairs(pages, videos, lives, out, domain_prefix=domain_prefix)
    click.echo(report.summary(), err=True, nl=False)


@convert.command("npz", short_help="Arrays in an .npz file -> submission parquet.")
@click.argument("arrays", type=click.Path())
@click.option("--out", "-o", required=True, type=click.Path(), help="Submission parquet to write.")
@click.option("--manifest", "-m", type=click.Path(), help="Validate the output against this manifest.")
def npz(arrays: str, out: str, manifest: str | None) -> None:
    """Convert ARRAYS.npz (embeddings, item_ids[, domains, product_ids]) into a submission.

    \b
    Example:
      python -c "import numpy as np; np.savez('arrays.npz', embeddings=np.eye(3), item_ids=[7, 8, 9])"
      ropebench convert npz arrays.npz --out submission.parquet --manifest manifest.parquet
    """
    from ropebench.io.pairs import convert_npz

    report = convert_npz(arrays, out, manifest=manifest)
    click.echo(report.summary(), err=True, nl=False)
