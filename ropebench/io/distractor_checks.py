"""Validation of a distractor catalogue, shard by shard, as a submission is validated.

Each shard is checked where it is read (:func:`check_shard`, on a Dask worker or a local thread)
and answers with counts, the first example ids and its id columns; :func:`merge_checks` adds the
catalogue-wide checks (duplicate ids, ids and products of the test set) and raises one
:class:`~ropebench.errors.DataError` naming every problem: file, column, count, up to five
example ids and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ropebench.io.distractors import Catalogue, Shard, domain_codes, read_table
from ropebench.protocol import DOMAINS, SPELLINGS

__all__ = ["ShardCheck", "CatalogueInfo", "check_shard", "merge_checks", "catalogue_record"]

_EXAMPLES = 5




@dataclass
class _Finding:
    """One kind of problem in one file: the count and the first example ids, merged over shards."""

    where: str
    what: str  # "{rows}" is replaced by the count, e.g. "3 rows"
    fix: str
    count: int = 0
    examples: list[Any] = field(default_factory=list)


@dataclass
class ShardCheck:
    """What checking one shard found, small enough to send back from a worker."""

    index: int
    findings: list[_Finding]
    ids: Any  # pyarrow Array of item ids (None if the column is unusable)
    products: Any  # pyarrow Array of the distinct product ids, or None
    n_items: np.ndarray  # (3,) int64 rows per domain
    max_norm: np.ndarray  # (3,) float64 largest screening norm of a prepared (gallery-side) vector per domain
    integers: np.ndarray  # (3,) float64 largest |x| of integer-valued prepared vectors, NaN if not all integers


@dataclass(frozen=True)
class CatalogueInfo:
    """A validated catalogue: per domain its items, the largest prepared vector norm, and the
    largest ``|x|`` of its prepared vectors if they are all integers (None otherwise)."""

    n_items: dict[str, int]
    max_norm: dict[str, float]
    integers: dict[str, float | None] = field(default_factory=dict)


def _note(findings: list[_Finding], where: str, what: str, fix: str, ids: Any, mask: np.ndarray | None = None) -> None:
    chosen = ids if mask is None else ids[mask]
    count = len(chosen)
    if count:
        findings.append(_Finding(where, what, fix, count, [_plain(v) for v in list(chosen[:_EXAMPLES])]))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _embedding_findings(findings: list[_Finding], matrix: np.ndarray, ids: np.ndarray, where: str, metric: str,
                        range_of: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None) -> None:
    """The submission's embedding checks (NaN/±inf, float32 overflow, all-zero rows under cosine,
    ip/l2 scores that overflow), as counts that merge over shards."""
    finite = np.isfinite(matrix).all(axis=1)
    overflow = np.zeros(len(matrix), dtype=bool)
    if range_of is not None and not finite.all():
        overflow[~finite] = range_of(~finite)[0]
    _note(findings, where, "{rows} hold finite float64 values that exceed float32's range", "scale the embeddings "
          "down (rankings do not change with a common scale)", ids, overflow)
    _note(findings, where, "{rows} contain NaN or ±inf", "replace them with finite values (check for a diverged "
          "model)", ids, ~finite & ~overflow)
    if metric in ("ip", "l2") and matrix.size:
        limit = float(np.sqrt(np.finfo(np.float32).max / (4.0 * matrix.shape[1])))
        _note(findings, where, f"{{rows}} hold values above {limit:.3g}, whose {metric} scores overflow float32",
              "scale the embeddings down", ids, finite & (np.abs(matrix).max(axis=1) > limit))
    if metric == "cosine":
        zero = finite & ~matrix.any(axis=1)
        rounded = np.zeros(len(matrix), dtype=bool)
        if range_of is not None and zero.any():
            rounded[zero] = range_of(zero)[1]
        _note(findings, where, "{rows} hold non-zero float64 values that round to zero in float32",
              "scale those embeddings up (cosine ignores the scale)", ids, rounded)
        _note(findings, where, "{rows} are all zeros, which have no direction under cosine",
              "replace them, or use --metric ip / l2", ids, zero & ~rounded)


def check_shard(shard: Shard, *, dim: int, metric: str, center: np.ndarray | None = None,
                compression: Any = None) -> ShardCheck:
    """Check one shard as a submission is checked; return counts, ids and norms (no exception for
    bad data: problems are merged over every shard by :func:`merge_checks`).

    Args:
        dim: the test set's ``d``.
        metric: ``cosine``, ``ip`` or ``l2``.
        center: l2 only: the test set's centre (see :func:`ropebench.engines.exact.l2_center`),
            so that the prepared norms are those the search will see.
        compression: ``evaluate --compress``'s :class:`~ropebench.compress.Compression`, or None:
            the shard's vectors are checked as submitted (at ``dim``), then compressed and checked
            again, as the test set's are; norms are those of the compressed vectors.
    """
    import pyarrow as pa

    from ropebench.engines.catalogue import integer_bound
    from ropebench.engines.core.scores import screen_norms
    from ropebench.engines.exact import prepare_vectors
    from ropebench.io.arrow import column_kind, embedding_matrix, float32_range, to_numpy

    findings: list[_Finding] = []
    table = read_table(shard, ("item_id", "domain", "product_id", "embedding"))
    n = table.num_rows
    where = f"distractors {shard.path}"
    id_column = table.column("item_id")
    ids_arrow = None
    if column_kind(id_column.type) is None:
        findings.append(_Finding(f"{where} column 'item_id'", f"has type {id_column.type}; expected string or "
                                 "integer", "cast 'item_id' to string or int64", n))
        shown = np.arange(shard.start, shard.start + n)  # positions stand in for unusable ids
    else:
        ids_arrow = id_column.combine_chunks()
        if pa.types.is_dictionary(ids_arrow.type):
            ids_arrow = ids_arrow.dictionary_decode()
        shown = np.array(ids_arrow.to_pylist(), dtype=object) if column_kind(ids_arrow.type) == "str" or \
            ids_arrow.null_count else to_numpy(ids_arrow)
        _note(findings, f"{where} column 'item_id'", "{rows} with a null item_id", "give every row an item_id",
              np.arange(shard.start, shard.start + n), to_numpy(ids_arrow.is_null()))
    domains = domain_codes(table, shard)
    unknown = domains < 0
    if unknown.any():
        spellings = sorted({str(v) for v in np.array(table.column("domain").to_pylist(), dtype=object)[unknown]})
        named = ", ".join(map(repr, spellings[:5]))
        _note(findings, f"{where} column 'domain'", f"{{rows}} with unknown domain {named}",
              f"use one of {', '.join(sorted(SPELLINGS))} (case-insensitive)", shown, unknown)
    products = None
    if "product_id" in table.column_names:
        column = table.column("product_id")
        if column_kind(column.type) is None:
            findings.append(_Finding(f"{where} column 'product_id'", f"has type {column.type}; expected string or "
                                     "integer", "cast 'product_id' to string or int64, or drop it", n))
        else:
            import pyarrow.compute as pc

            products = pc.unique(column.combine_chunks().drop_null())
    n_items = np.bincount(domains[domains >= 0], minlength=len(DOMAINS)).astype(np.int64)
    max_norm = np.zeros(len(DOMAINS), dtype=np.float64)
    integers = np.zeros(len(DOMAINS), dtype=np.float64)
    column = table.column("embedding")
    matrix, structural, dtype, bad = embedding_matrix(column)
    ewhere = f"{where} column 'embedding'"
    if structural is not None:
        findings.append(_Finding(ewhere, structural[0], structural[1], int(bad.sum()) or n,
                                 [_plain(v) for v in list(shown[bad][:_EXAMPLES])]))
    elif matrix is None:
        _note(findings, ewhere, "{rows} with a null embedding", "give every item an embedding", shown, bad)
    elif matrix.shape[1] != dim:
        findings.append(_Finding(ewhere, f"has dimension {matrix.shape[1]}, but the test set's embeddings have "
                                 f"d={dim}", "embed the catalogue with the same model", n,
                                 [_plain(v) for v in list(shown[:_EXAMPLES])]))
    else:
        range_of = (lambda rows: float32_range(column, rows)) if dtype == "float64" else None
        before = len(findings)
        _embedding_findings(findings, matrix, shown, ewhere, metric, range_of)
        if compression is not None and len(findings) == before:
            matrix = compression.apply(matrix)
            _embedding_findings(findings, matrix, shown, f"{ewhere} after --compress {compression.name}", metric,
                                None)
        if len(findings) == before:  # prepared norms only for valid vectors
            for code in range(len(DOMAINS)):
                rows = np.flatnonzero(domains == code)
                if len(rows):
                    gallery = prepare_vectors(matrix[rows], metric, center=center)[1]
                    max_norm[code] = float(screen_norms(gallery, metric, "gallery").max())
                    top = integer_bound(gallery)
                    integers[code] = np.nan if top is None else top
    return ShardCheck(shard.index, findings, ids_arrow, products, n_items, max_norm, integers)


def _as_comparable(arrays: Sequence[Any]) -> list[Any]:
    """Arrow id arrays in one type: as they are if they share it, else all as decimal text (``17``
    matches ``"17"``, as for a submission and its manifest)."""
    import pyarrow as pa

    kinds = {str(a.type) for a in arrays}
    if len(kinds) <= 1:
        return list(arrays)
    return [a.cast(pa.string()) for a in arrays]


def merge_checks(checks: Iterable[ShardCheck], catalogue: Catalogue, *, test_ids: np.ndarray,
                 test_products: np.ndarray) -> CatalogueInfo:
    """Merge every shard's check, add the catalogue-wide ones (duplicate ids, ids of the test set,
    products of the test set) and raise one DataError listing every problem.

    Args:
        checks: one :class:`ShardCheck` per shard, in any order.
        test_ids, test_products: the test set's ``item_id`` and ``product_id`` values.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ropebench.io.arrow import id_array, to_numpy
    from ropebench.io.validation import _Problems

    ordered = sorted(checks, key=lambda c: c.index)
    merged: dict[tuple[str, str, str], _Finding] = {}
    for check in ordered:
        for finding in check.findings:
            key = (finding.where, finding.what, finding.fix)
            if key not in merged:
                merged[key] = _Finding(*key)
            merged[key].count += finding.count
            merged[key].examples = (merged[key].examples + finding.examples)[:_EXAMPLES]
    problems = _Problems()
    for finding in merged.values():
        rows = f"{finding.count} row" + ("" if finding.count == 1 else "s")
        problems.add(finding.where, finding.what.replace("{rows}", rows), np.array(finding.examples, dtype=object)
                     if finding.examples else None, finding.fix)
    ids = [c.ids for c in ordered if c.ids is not None and len(c.ids)]
    where = f"distractors {', '.join(catalogue.paths)} column"
    if ids:
        all_ids = pa.chunked_array(_as_comparable(ids)).combine_chunks()
        counts = pc.value_counts(all_ids.drop_null())
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        if len(repeated):
            dupes = np.array(repeated.field("values").to_pylist(), dtype=object)
            problems.add(f"{where} 'item_id'", f"{len(dupes)} item_id(s) appear more than once "
                         f"({int(to_numpy(repeated.field('counts')).sum())} rows)", dupes, "keep one row per item")
        test, mine = _as_comparable([id_array(np.asarray(test_ids)), all_ids])
        clash = to_numpy(pc.is_in(mine, value_set=test).fill_null(False))
        if clash.any():
            problems.add(f"{where} 'item_id'", f"{int(clash.sum())} distractor(s) have the item_id of a test-set item",
                         np.array(mine.filter(pa.array(clash)).to_pylist(), dtype=object),
                         "give distractors their own ids (e.g. a prefix such as 'd-')")
    products = [c.products for c in ordered if c.products is not None and len(c.products)]
    if products:
        test, *mine_parts = _as_comparable([id_array(np.asarray(test_products)), *products])
        shared = pc.unique(pa.chunked_array(mine_parts).combine_chunks())
        shared = shared.filter(pc.is_in(shared, value_set=test))
        if len(shared):
            problems.add(f"{where} 'product_id'", f"{len(shared)} product_id(s) of the test set appear among the "
                         "distractors, which must be relevant to no query", None,
                         f"drop those items or relabel them (e.g. {', '.join(map(repr, shared.to_pylist()[:5]))})")
    problems.raise_if_any(f"distractors {', '.join(catalogue.paths)}")
    n_items = np.sum([c.n_items for c in ordered], axis=0) if ordered else np.zeros(len(DOMAINS), dtype=np.int64)
    norms = np.max([c.max_norm for c in ordered], axis=0) if ordered else np.zeros(len(DOMAINS))
    # NaN (not all integers) wins the maximum.
    integers = np.max([c.integers for c in ordered], axis=0) if ordered else np.zeros(len(DOMAINS))
    return CatalogueInfo({code: int(n_items[i]) for i, code in enumerate(DOMAINS)},
                         {code: float(norms[i]) for i, code in enumerate(DOMAINS)},
                         {code: None if np.isnan(top) else float(top) for code, top in zip(DOMAINS, integers)})


def catalogue_record(catalogue: Catalogue, info: CatalogueInfo) -> dict[str, Any]:
    """What a results file records: ``{paths, sha256, n_items: {P, V, L}}`` (one sha256 per path,
    a directory's over its sorted files, as for a submission; ``n_items``: the items checked)."""
    from ropebench.io.files import sha256_file

    return {"paths": list(catalogue.paths), "sha256": [sha256_file(path) for path in catalogue.paths],
            "n_items": dict(info.n_items)}
