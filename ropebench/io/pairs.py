"""Converters for ROPE's ``*_pair.txt`` files (-> manifest) and for numpy ``.npz`` arrays (-> submission).

ROPE's pair files hold one ``product_id, item_id`` pair per line, "splited by commas" as the
dataset's README says (``99721, 7``). This reader takes a comma with any surrounding spaces, a
tab, or plain whitespace as the separator; blank lines are skipped; there is no header. Ids made
only of decimal digits (no leading zeros) become int64 (uint64 beyond 2**63); otherwise the
whole column stays text, so no id ever changes its value.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ropebench.errors import DataError
from ropebench.io.parquet import read_source, to_numpy
from ropebench.io.safety import regular_input
from ropebench.io.submission import (
    METADATA_KEY,
    Problems,
    check_submission_file,
    refuse_output_among_inputs,
    source_records,
    submission_table,
    write_table_atomically,
)
from ropebench.protocol import DOMAINS, canonical_domain

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = ["NpzReport", "PairsReport", "convert_npz", "convert_rope_pairs", "read_pairs"]

_SEPARATOR = r"\s*,\s*|\s+"
_CANONICAL_INT = r"^(0|-?[1-9][0-9]*)$"
_NPZ_KEYS = ("embeddings", "item_ids", "domains", "product_ids")
_EXAMPLES = 5


@dataclass(frozen=True)
class PairsReport:
    """Counts per domain (P, V, L) of what :func:`convert_rope_pairs` wrote."""

    out: str
    items: dict[str, int]
    products: dict[str, int]
    repeated_lines: dict[str, int]
    n_products: int
    products_in_all_domains: int
    item_id_type: str
    product_id_type: str

    def summary(self) -> str:
        lines = ["domain  items  products  repeated lines dropped"]
        lines += [f"{d:<6}  {self.items[d]:<5}  {self.products[d]:<8}  {self.repeated_lines[d]}" for d in DOMAINS]
        lines.append(f"{self.n_products} products, {self.products_in_all_domains} with "
                     f"items in all three domains; item_id {self.item_id_type}, product_id {self.product_id_type}")
        lines.append(f"wrote {self.out} ({sum(self.items.values())} items); validated as a manifest")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class NpzReport:
    """What :func:`convert_npz` wrote."""

    out: str
    items: int
    dim: int
    dtype: str
    labelled: bool
    ignored_keys: tuple[str, ...]
    check: str

    def summary(self) -> str:
        lines = [f"read {self.items} embeddings of d={self.dim} ({self.dtype}; stored as float32)"]
        if self.ignored_keys:
            lines.append(f"ignored array(s) {', '.join(self.ignored_keys)} (known: {', '.join(_NPZ_KEYS)})")
        lines.append(f"wrote {self.out}; {self.check}")
        return "\n".join(lines) + "\n"


def read_pairs(path: str | os.PathLike[str]) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """One pair file as ``(product_ids, item_ids, line_numbers)``: text arrays, blank lines dropped.

    Raises:
        DataError: ``file:line`` of a line that is not exactly two fields, or not UTF-8.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: is not UTF-8 text. Fix: save the file as UTF-8") from None
    lines = pc.utf8_trim_whitespace(pa.array(text.split("\n"), type=pa.string()))
    numbers = np.arange(1, len(lines) + 1)
    filled = pc.not_equal(lines, "")
    lines, numbers = lines.filter(filled), numbers[to_numpy(filled)]
    fields = pc.split_pattern_regex(lines, _SEPARATOR)
    bad = np.flatnonzero(to_numpy(pc.list_value_length(fields)) != 2)
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{path}:{numbers[row]}: {lines[row].as_py()!r} is not 'product_id, item_id' "
                        f"({len(bad)} such line(s)). Fix: one pair per line, e.g. '99721, 7'")
    flat = pc.list_flatten(fields)
    return flat.take(pa.array(np.arange(0, len(flat), 2))), flat.take(pa.array(np.arange(1, len(flat), 2))), numbers


def _typed_ids(values: pa.Array) -> pa.Array:
    """int64 (or uint64) when every id is a canonical decimal integer that fits, else the text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(values) or not pc.all(pc.match_substring_regex(values, _CANONICAL_INT)).as_py():
        return values
    for type_ in (pa.int64(), pa.uint64()):
        try:
            return pc.cast(values, type_)
        except pa.ArrowInvalid:
            continue
    return values


def _check_manifest(path: str) -> None:
    """Read a written manifest back: every column there, ids unique and non-null, domains known."""
    import pyarrow.compute as pc

    table = read_source(path, what="manifest").table
    problems = Problems(f"manifest {path}")
    for name in ("item_id", "domain", "product_id"):
        if name not in table.column_names:
            problems.add(f"column '{name}'", "is missing")
        elif table.column(name).null_count:
            problems.add(f"column '{name}'", "has nulls")
    if not problems.lines:
        if pc.count_distinct(table.column("item_id")).as_py() != table.num_rows:
            problems.add("column 'item_id'", "has repeated ids")
        if any(canonical_domain(d) is None for d in pc.unique(table.column("domain")).to_pylist()):
            problems.add("column 'domain'", "has unknown domains")
    problems.raise_if_any()


def convert_rope_pairs(
    pages: str | os.PathLike[str],
    videos: str | os.PathLike[str],
    lives: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    domain_prefix: bool = False,
) -> PairsReport:
    """ROPE's three pair files (product pages, short videos, live clips) -> a manifest parquet.

    Args:
        pages, videos, lives: the ``*_pair.txt`` files of the P, V and L domains.
        out: the manifest parquet (``item_id``, ``domain``, ``product_id``) to write.
        domain_prefix: write item ids as ``P:7``, ``V:7``, ``L:7``, for id spaces that overlap
            across domains (use the same option for ``convert cope``).

    Raises:
        DataError: a malformed line (``file:line``), an item listed under two products, or an
            item id used in two domains without ``domain_prefix``. Nothing is written then.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    sources = {"P": pages, "V": videos, "L": lives}
    unreadable = []
    for code, source in sources.items():  # every unreadable file at once, none of them opened
        try:
            regular_input(source, f"pair file ({code})", fix="give ROPE's *_pair.txt text file")
        except DataError as error:
            unreadable.append(str(error))
    if len(unreadable) == 1:
        raise DataError(unreadable[0])
    if unreadable:
        raise DataError(f"convert rope-pairs: {len(unreadable)} input files cannot be read, nothing was written:\n  - "
                        + "\n  - ".join(unreadable))
    refuse_output_among_inputs(out, list(sources.values()))
    products, items, domains, repeated = [], [], [], {}
    problems = Problems("convert rope-pairs")
    for code, path in sources.items():
        product_ids, item_ids, numbers = read_pairs(path)
        pairs = pc.binary_join_element_wise(item_ids, product_ids, "\t")
        _, first = np.unique(to_numpy(pc.index_in(pairs, value_set=pc.unique(pairs))), return_index=True)
        keep = pa.array(np.sort(first))
        repeated[code] = len(pairs) - len(keep)  # the same pair twice is harmless: keep one
        product_ids, item_ids = product_ids.take(keep), item_ids.take(keep)
        counts = pc.value_counts(item_ids)
        ambiguous = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        if len(ambiguous):
            line = numbers[to_numpy(keep)][to_numpy(pc.is_in(item_ids, value_set=ambiguous))][1:2]
            problems.add(f"{path}", f"{len(ambiguous)} item(s) listed under more than one product"
                         + (f" (first repeat at line {line[0]})" if len(line) else ""),
                         ambiguous.to_pylist(), "keep one product per item")
        if domain_prefix:
            item_ids = pc.binary_join_element_wise(f"{code}:", item_ids, "")
        products.append(product_ids)
        items.append(item_ids)
        domains.append(pa.array([code] * len(item_ids), type=pa.string()))
    problems.raise_if_any()
    item_ids = pa.concat_arrays(items)
    counts = pc.value_counts(item_ids)
    shared = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(shared):
        raise DataError(f"convert rope-pairs: {len(shared)} item id(s) appear in more than one domain's file "
                        f"(e.g. {shared[:_EXAMPLES].to_pylist()}); ids must be unique across P, V and L. "
                        "Fix: pass --domain-prefix (and the same to convert cope)")
    product_ids = _typed_ids(pa.concat_arrays(products))
    item_ids = item_ids if domain_prefix else _typed_ids(item_ids)
    domain = pa.concat_arrays(domains)
    product_sets = [set(p.to_pylist()) for p in products]
    metadata = {"converter": "rope-pairs", "sources": source_records(list(sources.values())),
                "options": {"domain_prefix": domain_prefix}}
    table = pa.table({"item_id": item_ids, "domain": domain, "product_id": product_ids})
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    write_table_atomically(out, table, check=_check_manifest)
    return PairsReport(os.fspath(out), {c: len(i) for c, i in zip(DOMAINS, items)},
                       {c: len(s) for c, s in zip(DOMAINS, product_sets)}, repeated, len(set.union(*product_sets)),
                       len(set.intersection(*product_sets)), str(item_ids.type), str(product_ids.type))


def convert_npz(
    path: str | os.PathLike[str], out: str | os.PathLike[str], *, manifest: str | os.PathLike[str] | None = None
) -> NpzReport:
    """Arrays in an ``.npz`` file -> a submission parquet (through :func:`write_submission`'s checks).

    Arrays: ``embeddings`` ``(n, d)`` floats and ``item_ids`` ``(n,)`` (int or str) are required;
    ``domains`` and ``product_ids`` ``(n,)`` are optional (with both, the file is self-labelled).
    Object arrays are refused (loading them would unpickle): save string ids as ``dtype=str``.

    Raises:
        DataError: unreadable file, missing or malformed arrays, or a written file that does not
            validate (against ``manifest`` when given). Nothing is written then.
    """
    regular_input(path, "npz file", fix="give an .npz file written by numpy.savez")
    refuse_output_among_inputs(out, [path, *([manifest] if manifest is not None else [])])
    arrays = _read_npz(Path(path))
    missing = [key for key in _NPZ_KEYS[:2] if key not in arrays]
    if missing:
        raise DataError(f"npz file {path}: array(s) {', '.join(missing)} missing "
                        f"(found: {', '.join(arrays) or 'none'}). "
                        "Fix: numpy.savez(path, embeddings=…, item_ids=…[, domains=…, product_ids=…])")
    embeddings = arrays["embeddings"]
    metadata = {"converter": "npz", "sources": source_records([path, *([manifest] if manifest else [])]),
                "embedding_dtype": str(embeddings.dtype)}
    try:
        table = submission_table(arrays["item_ids"], embeddings, arrays.get("domains"), arrays.get("product_ids"),
                                 metadata=metadata)
    except DataError as error:  # the checks speak of write_submission's arguments: here they are arrays of a file
        raise DataError(str(error).replace("write_submission:", f"npz file {path}:", 1)
                        .replace("argument '", "array '")) from None
    check: list[str] = []
    write_table_atomically(out, table, check=lambda tmp: check.append(check_submission_file(tmp, manifest)))
    return NpzReport(os.fspath(out), table.num_rows, int(embeddings.shape[1]), str(embeddings.dtype),
                     "domains" in arrays and "product_ids" in arrays,
                     tuple(k for k in arrays if k not in _NPZ_KEYS), check[0])


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; DataError naming the file, the array and the fix."""
    import zipfile

    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise DataError(f"npz file {path}: is a single .npy array, not an .npz archive of named arrays. Fix: "
                        "numpy.savez(path, embeddings=…, item_ids=…[, domains=…, product_ids=…])")
    if not magic.startswith(b"PK"):
        raise DataError(f"npz file {path}: not an .npz archive (it does not start like a zip file). Fix: write "
                        "it with numpy.savez(path, embeddings=…, item_ids=…)")
    arrays: dict[str, np.ndarray] = {}
    key = None
    try:
        # Our own handle: np.load leaves the file open when the archive turns out to be broken.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except ValueError as error:
        where = f"array {key!r}" if key is not None else "the archive"
        if "pickle" in str(error).lower() or "object" in str(error).lower():
            raise DataError(f"npz file {path}, {where}: holds Python objects ({error}). Fix: save ids as numbers or "
                            "np.array(ids, dtype=str), never as Python objects") from None
        raise DataError(f"npz file {path}, {where}: cannot be read ({error}). Fix: write it again with "
                        "numpy.savez (is it truncated?)") from None
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, MemoryError) as error:
        where = f"array {key!r}" if key is not None else "the archive"
        raise DataError(f"npz file {path}, {where}: cannot be read as .npz ({type(error).__name__}: {error}). "
                        "Fix: write it again with numpy.savez (is it truncated or still being copied?)") from None
    return arrays
