"""Validation of a submission (and manifest) into a :class:`Dataset` (docs/formats.md, "Validation").

Every check runs before any search, and all problems are reported at once in one
:class:`~ropebench.errors.DataError`: the file, the column, the count, up to five example
``item_id`` s and the fix. Nothing here computes a metric.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ropebench.dataset import Dataset
from ropebench.errors import DataError
from ropebench.io.ids import (
    as_numpy,
    common_ids,
    exact_ints,
    factorize,
    label_array,
    nulls,
    positions,
)
from ropebench.io.parquet import Source, column_kind, embedding_matrix, float32_range, read_source, to_numpy
from ropebench.protocol import DOMAINS, SPELLINGS

__all__ = ["load_dataset", "dataset_from_arrays", "as_numpy", "check_matrix"]

_DOMAIN_CODES = {code: index for index, code in enumerate(DOMAINS)}
_INT_RANGE = (int(np.iinfo(np.int64).min), int(np.iinfo(np.uint64).max))  # ids an Arrow column can hold
_MAX_EXAMPLES = 5


class _Problems:
    """Collects problems as readable lines: where, what, how many, which ids, the fix."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, where: str, what: str, ids: Any = None, fix: str = "") -> None:
        line = f"{where}: {what}"
        if ids is not None and len(ids):
            shown = ", ".join(repr(_plain(v)) for v in list(ids[:_MAX_EXAMPLES]))
            line += f" (e.g. item_id {shown})"
        if fix:
            line += f". Fix: {fix}"
        self.lines.append(line)

    def raise_if_any(self, headline: str) -> None:
        if self.lines:
            noun = "problem" if len(self.lines) == 1 else "problems"
            raise DataError(
                f"{headline}: {len(self.lines)} {noun} found, nothing was evaluated:\n  - "
                + "\n  - ".join(self.lines)
            )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _id_values(table: Any, name: str, where: str, problems: _Problems, *, required: bool) -> np.ndarray | None:
    """An id-like column (string or integer) as a numpy array, or None with a problem noted."""
    import pyarrow as pa

    if name not in table.column_names:
        if required:
            problems.add(f"{where} column '{name}'", "is missing", fix=f"add a '{name}' column")
        return None
    column = table.column(name)
    if column_kind(column.type) is None:
        problems.add(f"{where} column '{name}'", f"has type {column.type}; expected string or integer",
                     fix=f"cast '{name}' to string or int64")
        return None
    if column.null_count:
        return np.array(column.to_pylist(), dtype=object)  # nulls as None; only on the error path
    if column_kind(column.type) == "int" and not pa.types.is_dictionary(column.type):
        return exact_ints(to_numpy(column))
    values = np.empty(len(column), dtype=object)
    values[:] = column.to_pylist()  # strings (and dictionary-encoded ids) as Python objects
    if column_kind(column.type) == "int":
        return exact_ints(np.array(values.tolist()))
    return values


def _unique_ids(ids: np.ndarray, where: str, problems: _Problems) -> bool:
    """True when no item_id is null or repeated; otherwise note the problem and return False."""
    null = nulls(ids)
    if null.any():
        problems.add(f"{where} column 'item_id'", f"{_count(int(null.sum()), 'row')} with a null item_id",
                     fix="give every row an item_id")
        return False
    return _check_unique(ids, where, problems)


def _check_unique(ids: np.ndarray, where: str, problems: _Problems) -> bool:
    codes, uniques = factorize(ids)
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    duplicated = (codes >= 0) & (counts[np.maximum(codes, 0)] > 1)
    if duplicated.any():
        dupes = uniques[counts > 1]  # in order of first appearance
        verb = "appears" if len(dupes) == 1 else "appear"
        problems.add(f"{where} column 'item_id'", f"{_count(len(dupes), 'item_id')} {verb} more than once "
                     f"({int(duplicated.sum())} rows)", dupes, "keep one row per item")
        return False
    return True


def _domain_codes(values: np.ndarray, ids: np.ndarray, where: str, problems: _Problems) -> np.ndarray | None:
    """Map domain spellings to codes 0/1/2; unknown or null spellings are one problem."""
    codes_of_unique, uniques = factorize(values)
    table = np.array([_DOMAIN_CODES.get(SPELLINGS.get(str(u).strip().lower(), ""), -1) for u in uniques] + [-1],
                     dtype=np.int8)
    codes = table[codes_of_unique]  # the sentinel -1 indexes the trailing -1 (null)
    unknown = codes < 0
    if unknown.any():
        names = sorted({str(v) for v in values[unknown]})
        problems.add(f"{where} column 'domain'", f"{_count(int(unknown.sum()), 'row')} with unknown domain "
                     f"{', '.join(map(repr, names[:_MAX_EXAMPLES]))}", ids[unknown],
                     f"use one of {', '.join(sorted(SPELLINGS))} (case-insensitive)")
        return None
    return codes


RangeOf = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]


def _check_embeddings(matrix: np.ndarray, ids: np.ndarray, where: str, metric: str, problems: _Problems,
                      range_of: RangeOf | None = None) -> None:
    """NaN/±inf, float32 overflow, all-zero rows under cosine, and ip/l2 scores that would overflow.

    ``range_of(mask)``: for float64 sources, ``(overflow, underflow)`` of the masked rows (see
    :func:`ropebench.io.parquet.float32_range`), so a row that is inf or all zeros only after the
    cast to float32 is named for what happened to it.
    """
    n = len(matrix)
    finite = np.isfinite(matrix).all(axis=1)
    masks = {"finite": finite, "overflow": np.zeros(n, dtype=bool)}
    if range_of is not None and not finite.all():
        masks["overflow"][~finite] = range_of(~finite)[0]
    if metric in ("ip", "l2") and matrix.size:
        masks["big"] = finite & (np.abs(matrix).max(axis=1) > _score_limit(matrix.shape[1]))
    if metric == "cosine":
        masks["zero"] = zero = finite & ~matrix.any(axis=1)
        masks["rounded"] = np.zeros(n, dtype=bool)
        if range_of is not None and zero.any():
            masks["rounded"][zero] = range_of(zero)[1]
    _report_embeddings(masks, matrix.shape[1], ids, where, metric, problems)


def _score_limit(dim: int) -> float:
    """Inner products (and l2's |g|²) are summed in float32: keep d·max|x|² under its range."""
    return float(np.sqrt(np.finfo(np.float32).max / (4.0 * dim)))


def _report_embeddings(masks: dict[str, np.ndarray], dim: int, ids: np.ndarray, where: str, metric: str,
                       problems: _Problems) -> None:
    """The problems of :func:`_check_embeddings` from its row masks (``finite``, ``overflow``,
    and ``big`` for ip/l2, ``zero`` and ``rounded`` for cosine), however they were computed."""
    column = f"{where} column 'embedding'"
    finite, overflow = masks["finite"], masks["overflow"]
    if overflow.any():
        problems.add(column, f"{_count(int(overflow.sum()), 'row')} hold finite float64 values that exceed float32's "
                     f"range (|x| > {float(np.finfo(np.float32).max):.3g}; they would become ±inf)", ids[overflow],
                     "scale the embeddings down (rankings do not change with a common scale under cosine, ip and l2)")
    broken = ~finite & ~overflow
    if broken.any():
        problems.add(column, f"{_count(int(broken.sum()), 'row')} contain NaN or ±inf",
                     ids[broken], "replace them with finite values (check for a diverged model)")
    big = masks.get("big")
    if big is not None and big.any():
        problems.add(column, f"{_count(int(big.sum()), 'row')} hold values above "
                     f"{_score_limit(dim):.3g}, whose {metric} scores overflow float32", ids[big],
                     "scale the embeddings down (ranking under ip and l2 does not change with a common scale)")
    if "zero" in masks:
        rounded = masks["rounded"]
        if rounded.any():
            problems.add(column, f"{_count(int(rounded.sum()), 'row')} hold non-zero float64 values so small that "
                         "they round to zero in float32 (|x| < 1.4e-45), leaving all-zero vectors with no direction "
                         "under cosine", ids[rounded], "scale those embeddings up (cosine ignores the scale)")
        zero = masks["zero"] & ~rounded
        if zero.any():
            problems.add(column, f"{_count(int(zero.sum()), 'row')} are all zeros, "
                         "which have no direction under cosine", ids[zero],
                         "replace them, or use --metric ip / l2")


def check_matrix(matrix: np.ndarray, ids: np.ndarray, where: str, metric: str) -> None:
    """The embedding checks of a submission on a float32 matrix made in memory (``--compress``).

    Raises:
        DataError: every problem, worded as for a submission's ``embedding`` column.
    """
    problems = _Problems()
    _check_embeddings(matrix, ids, where, metric, problems)
    problems.raise_if_any(where)


def _range_of_array(source: np.ndarray) -> RangeOf | None:
    """``range_of`` for an in-memory array wider than float32 (None for float32 and narrower)."""
    if source.dtype.itemsize <= 4:
        return None

    def range_of(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(source[rows], dtype=np.float64)
        finite = np.isfinite(values).all(axis=1)
        biggest = np.abs(np.where(np.isfinite(values), values, 0.0)).max(axis=1, initial=0.0)
        with np.errstate(over="ignore", under="ignore"):
            underflow = finite & (biggest > 0) & ~values.astype(np.float32).any(axis=1)
        return finite & (biggest > float(np.finfo(np.float32).max)), underflow

    return range_of


def load_dataset(
    submission: str | os.PathLike[str], manifest: str | os.PathLike[str] | None = None, *, metric: str = "cosine"
) -> Dataset:
    """Read and validate a submission, labelled by a manifest or by its own columns.

    Raises:
        DataError: listing every problem found (see docs/formats.md, "Validation").
    """
    import pyarrow as pa

    sub: Source | None = None
    man: Source | None = None
    try:
        sub = read_source(submission, what="submission")
        man = read_source(manifest, what="manifest") if manifest is not None else None
        return _validate(sub, man, metric=metric)
    except MemoryError:
        raise DataError(f"submission {submission}: ran out of memory while checking it (the float32 matrix alone "
                        "needs n × d × 4 bytes). Fix: use a machine with more memory or raise the memory limit "
                        "(ulimit -v, container memory)") from None
    finally:
        sub = man = None
        # The Arrow tables are gone, but their allocator keeps the pages (often several times the
        # embedding size after decoding); hand them back before the search needs memory.
        pa.default_memory_pool().release_unused()


def _validate(sub: Source, man: Source | None, *, metric: str) -> Dataset:
    problems = _Problems()
    where = f"submission {sub.path}"
    table = sub.table
    ids = _id_values(table, "item_id", where, problems, required=True)
    ids_unique = ids is not None and _unique_ids(ids, where, problems)

    matrix, dtype = None, "unknown"
    if "embedding" not in table.column_names:
        problems.add(f"{where} column 'embedding'", "is missing",
                     fix="add an 'embedding' column: one list of floats per item")
    else:
        matrix, structural, dtype, bad = embedding_matrix(table.column("embedding"))
        shown = ids if ids is not None else np.array([], dtype=object)
        if structural:
            what, fix = structural
            problems.add(f"{where} column 'embedding'", what, shown[bad] if ids is not None else None, fix)
        elif bad.any():
            problems.add(f"{where} column 'embedding'", f"{_count(int(bad.sum()), 'row')} with a null embedding",
                         shown[bad] if ids is not None else None, "give every item an embedding")
        if matrix is not None and ids is not None:
            column = table.column("embedding")
            range_of = (lambda rows: float32_range(column, rows)) if dtype == "float64" else None
            _check_embeddings(matrix, ids, where, metric, problems, range_of)

    self_labelled = man is None
    sub_domains = _id_values(table, "domain", where, problems, required=self_labelled) \
        if "domain" in table.column_names or self_labelled else None
    sub_products = _id_values(table, "product_id", where, problems, required=self_labelled)
    sub_groups = _id_values(table, "group_id", where, problems, required=False) if self_labelled else None

    if man is None:
        domains = None
        if ids is not None and sub_domains is not None:
            domains = _domain_codes(sub_domains, ids, where, problems)
        if ids is not None and sub_products is not None:
            _check_null_labels(sub_products, ids, f"{where} column 'product_id'", problems)
        problems.raise_if_any(f"submission {sub.path}")
        return _dataset(ids, domains, sub_products, sub_groups, matrix, dtype)

    mwhere = f"manifest {man.path}"
    mtable = man.table
    mids = _id_values(mtable, "item_id", mwhere, problems, required=True)
    mdomains = _id_values(mtable, "domain", mwhere, problems, required=True)
    mproducts = _id_values(mtable, "product_id", mwhere, problems, required=True)
    mgroups = _id_values(mtable, "group_id", mwhere, problems, required=False)
    mcategories = _id_values(mtable, "category", mwhere, problems, required=False)
    if mtable.num_rows == 0:
        problems.add(mwhere, "holds no rows (the table is empty)", fix="give the manifest one row per test item")
    mids_unique = mids is not None and _unique_ids(mids, mwhere, problems)
    codes = _domain_codes(mdomains, mids, mwhere, problems) if mdomains is not None and mids is not None else None
    if mproducts is not None and mids is not None:
        _check_null_labels(mproducts, mids, f"{mwhere} column 'product_id'", problems)

    # Matching goes on with repeated ids (each row matched to any row with its id), so coverage,
    # domain and label problems are reported together with the duplicates, not after them.
    domains = None
    if ids is not None and mids is not None:
        sids, mids_cmp = common_ids(ids, mids)
        position = positions(mids_cmp, sids)  # a manifest row of each submission row, or -1
        matched = position >= 0
        extra = ~matched & ~nulls(ids)
        if extra.any():
            problems.add(f"{where} column 'item_id'", f"{_count(int(extra.sum()), 'embedding')} for items not in the "
                         "manifest", ids[extra], "drop them, or evaluate against the manifest they belong to")
        covered = (positions(sids, mids_cmp) >= 0) | nulls(mids)  # null manifest ids are reported above
        if not covered.all():
            problems.add(f"{mwhere} column 'item_id'", f"{_count(int((~covered).sum()), 'item')} have no embedding "
                         f"in the submission (coverage {100 * covered.mean():.2f}%, must be 100%)", mids[~covered],
                         "embed every manifest item")
        if codes is not None:
            domains = np.full(len(ids), -1, dtype=np.int64)  # -1: no manifest row (reported above)
            domains[matched] = codes[position[matched]]
            if sub_domains is not None:
                own = _domain_codes(sub_domains, ids, where, problems)
                if own is not None:
                    differ = matched & (own != domains)
                    if differ.any():
                        problems.add(f"{where} column 'domain'", f"{_count(int(differ.sum()), 'row')} disagree with "
                                     "the manifest", ids[differ], "drop the column or fix the labels")
        if sub_products is not None and mproducts is not None:
            a, b = common_ids(sub_products[matched], mproducts[position[matched]])
            differ = np.zeros(len(ids), dtype=bool)
            differ[matched] = a != b
            if differ.any():
                problems.add(f"{where} column 'product_id'", f"{_count(int(differ.sum()), 'row')} disagree with "
                             "the manifest", ids[differ], "drop the column or fix the labels")
    problems.raise_if_any(f"submission {sub.path} with manifest {man.path}")
    if not (ids_unique and mids_unique) or ids is None or domains is None or mproducts is None:
        # Unreachable (every such case added a problem above); kept so a gap fails loudly, not silently.
        raise DataError(f"submission {sub.path} with manifest {man.path}: the files could not be matched")
    groups = mgroups[position] if mgroups is not None else None
    categories = mcategories[position] if mcategories is not None else None
    return _dataset(ids, domains, mproducts[position], groups, matrix, dtype, categories)


def _check_null_labels(values: np.ndarray, ids: np.ndarray, where: str, problems: _Problems) -> None:
    null = nulls(values)
    if null.any():
        problems.add(where, f"{_count(int(null.sum()), 'row')} with a null value", ids[null],
                     "give every item a product_id")


def _dataset(ids: Any, domains: Any, products: Any, groups: Any, matrix: Any, dtype: str,
             categories: Any = None, resident: Any = None) -> Dataset:
    group_codes = None
    if groups is not None:
        group_codes = factorize(groups)[0]  # null group -> -1: excluded with nothing but itself
    return Dataset(
        item_ids=ids,
        domains=np.asarray(domains, dtype=np.int8),
        product_ids=products,
        product_codes=factorize(products)[0],
        group_codes=group_codes,
        embeddings=matrix,
        dtype=dtype,
        categories=categories,
        resident=resident,
        dim=int(resident.tensor.shape[1]) if resident is not None else 0,
    )


def dataset_from_arrays(
    embeddings: Any,
    domains: Sequence[Any],
    product_ids: Sequence[Any],
    *,
    item_ids: Sequence[Any] | None = None,
    group_ids: Sequence[Any] | None = None,
    metric: str = "cosine",
    resident: bool = False,
) -> Dataset:
    """Validate in-memory arrays (the training-loop path) with the same checks as files.

    Args:
        embeddings: ``(n, d)`` array-like of floats; never modified.
        domains: ``(n,)`` domain spellings.
        product_ids: ``(n,)`` product ids (str or int).
        item_ids: ``(n,)`` unique ids; default ``0..n-1``.
        group_ids: ``(n,)`` optional group ids (None entries = no group).
        resident: ``embeddings`` is a torch tensor to be checked on its device, where it stays
            (:mod:`ropebench.engines.torch.resident`; same checks, same messages): the dataset
            then holds it as ``resident`` and ``embeddings`` is None.
    """
    problems = _Problems()
    where = "arrays"
    if resident:
        from ropebench.engines.torch.resident import tensor_kind

        source: Any = embeddings.detach()
        shape, dtype, floating = tensor_kind(source)
    else:
        source = as_numpy(embeddings)
        shape, dtype, floating = source.shape, str(source.dtype), np.issubdtype(source.dtype, np.floating)
    if len(shape) != 2 or shape[1] == 0 or not floating:
        raise DataError(f"{where} 'embeddings': shape {shape}, dtype {dtype}; expected a 2-d float "
                        "array (n, d) with d > 0. Fix: pass np.asarray(vectors, dtype=np.float32)")
    n = shape[0]
    ids = np.arange(n, dtype=np.int64) if item_ids is None else label_array(item_ids)
    labels = {"domains": label_array(domains), "product_ids": label_array(product_ids), "item_ids": ids}
    if group_ids is not None:
        labels["group_ids"] = label_array(group_ids)
    for name, values in labels.items():
        if values.ndim != 1 or len(values) != n:
            problems.add(f"{where} '{name}'", f"has shape {values.shape} for {n} embeddings",
                         fix="pass one entry per embedding row")
    problems.raise_if_any("arrays")
    _check_id_kinds(labels["domains"], f"{where} 'domains'", problems, floats=True)
    _check_id_kinds(ids, f"{where} 'item_ids'", problems, floats=False)
    _check_id_kinds(labels["product_ids"], f"{where} 'product_ids'", problems, floats=False)
    if "group_ids" in labels:
        _check_id_kinds(labels["group_ids"], f"{where} 'group_ids'", problems, floats=True)
    problems.raise_if_any("arrays")
    if nulls(ids).any():
        problems.add(f"{where} 'item_ids'", f"{_count(int(nulls(ids).sum()), 'entry')} are null",
                     fix="give every row an item_id")
    else:
        _check_unique(ids, where, problems)
    # The float32 copy (made once, only when needed) is what gets checked: a float64 value can
    # overflow or vanish in it; range_of names those rows from the original values.
    matrix, kept = None, None
    if resident:
        from ropebench.engines.torch.resident import checked_on_device

        kept, masks = checked_on_device(source, metric, _score_limit(shape[1]))
        _report_embeddings(masks, shape[1], ids, where, metric, problems)
    else:
        with np.errstate(over="ignore", under="ignore"):
            matrix = np.ascontiguousarray(source, dtype=np.float32)
        _check_embeddings(matrix, ids, where, metric, problems, _range_of_array(source))
    codes = _domain_codes(labels["domains"], ids, where, problems)
    _check_null_labels(labels["product_ids"], ids, f"{where} 'product_ids'", problems)
    problems.raise_if_any("arrays")
    return _dataset(ids, codes, labels["product_ids"], labels.get("group_ids"), matrix, dtype, resident=kept)


def _check_id_kinds(values: np.ndarray, where: str, problems: _Problems, *, floats: bool) -> None:
    """Ids are matched exactly, so one array holds integers or strings, never both (``1`` and
    ``"1"`` would print alike and be written as text) and, unless ``floats``, never floats
    (``0.1 + 0.2`` is not ``0.3``). Nulls (None) are checked elsewhere."""
    if values.dtype.kind in "iuUS":
        return
    kinds: dict[str, Any] = {}
    for value in values.tolist() if values.dtype == object else values[:1].tolist():
        if value is None:
            continue
        kind = ("int" if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) else
                "str" if isinstance(value, str) else
                "float" if isinstance(value, (float, np.floating)) else type(value).__name__)
        kinds.setdefault(kind, value)
    allowed = {"int", "str", "float"} if floats else {"int", "str"}
    odd = [kind for kind in kinds if kind not in allowed]
    if "int" in kinds and values.dtype == object:
        outside = [v for v in values.tolist() if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                   and not _INT_RANGE[0] <= int(v) <= _INT_RANGE[1]]
        if outside:
            problems.add(where, f"holds {_count(len(outside), 'integer')} beyond 64 bits (e.g. {outside[0]!r})",
                         fix="pass such ids as strings")
    if odd:
        problems.add(where, f"holds {', '.join(odd)} values (e.g. {kinds[odd[0]]!r}), which cannot be matched "
                     "exactly", fix="pass integers or strings")
    elif len(kinds) > 1:
        shown = ", ".join(f"{kind} {value!r}" for kind, value in kinds.items())
        problems.add(where, f"mixes value types ({shown}) in one array", fix="use one type: all strings or all "
                     "integers (e.g. [str(x) for x in ids])")


