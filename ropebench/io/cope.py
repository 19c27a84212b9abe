"""Reading the text shards the official COPE model's ``infer.py`` writes, into a submission.

``infer.py`` writes, per local rank ``N`` of every node, three files into its output directory:

- ``N_item``:  ``page_id<TAB>v1,v2,…,vd``  (product pages, domain P)
- ``N_photo``: ``video_id<TAB>v1,…,vd``    (short videos, domain V)
- ``N_live``:  ``live_id<TAB>starttime<TAB>endtime<TAB>v1,…,vd``  (live clips, domain L)

one line per item, no header, no quoting, each value ``str()`` of a float32 widened to a Python
float (``0.0123``, ``1e-05``, ``-0.0``). Parsing goes through pyarrow's CSV reader and vectorised
casts, never a Python loop per value; a float32 printed this way reads back to the same bits.

``DistributedSampler`` pads every rank to the same length by repeating items, so some items
appear twice; the first copy is kept (directories in the order given, ranks ascending) and the
repeats are counted, with the largest absolute difference between copies.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ropebench.errors import DataError, UsageError
from ropebench.io.convert_report import CopeReport, DomainReport, manifest_coverage
from ropebench.io.parquet import to_numpy
from ropebench.io.safety import regular_input
from ropebench.io.submission import (
    check_submission_file,
    refuse_output_among_inputs,
    source_records,
    submission_table,
    write_table_atomically,
)
from ropebench.protocol import DOMAINS

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = [
    "DEFAULT_LIVE_ID",
    "CopeReport",
    "DomainReport",
    "Shard",
    "ShardData",
    "convert_cope",
    "find_shards",
    "read_shard",
]

DEFAULT_LIVE_ID = "{live_id}|{starttime}|{endtime}"
LIVE_FIELDS = ("live_id", "starttime", "endtime")
_SHARD_NAME = re.compile(r"^(\d+)_(item|photo|live)$")
_DOMAIN_OF_SUFFIX = {"item": "P", "photo": "V", "live": "L"}
_EXAMPLES = 5


@dataclass(frozen=True)
class Shard:
    """One ``{rank}_{item|photo|live}`` file."""

    path: Path
    rank: int
    domain: str


@dataclass(frozen=True)
class ShardData:
    """The rows of one shard: ``keys`` identify a row for de-duplication (raw fields for live)."""

    shard: Shard
    item_ids: pa.Array
    keys: pa.Array
    embeddings: np.ndarray
    live_fields: dict[str, pa.Array] | None
    rounded_values: int


def live_id_parts(template: str) -> list[tuple[str, str | None]]:
    """Split a ``--live-id`` template into ``(literal, field or None)`` parts; UsageError if invalid."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise UsageError(f"--live-id {template!r}: {error}. Fix: e.g. '{DEFAULT_LIVE_ID}' or '{{live_id}}'") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in LIVE_FIELDS or spec or conversion):
            raise UsageError(f"--live-id {template!r}: unknown field {{{name}}}. "
                             f"Fix: use only {{live_id}}, {{starttime}} and {{endtime}}, without format specs")
        parts.append((literal, name))
    if not any(name == "live_id" for _, name in parts):
        raise UsageError(f"--live-id {template!r}: must contain {{live_id}}. Fix: e.g. '{DEFAULT_LIVE_ID}'")
    return parts


def find_shards(directories: Sequence[str | os.PathLike[str]]) -> list[Shard]:
    """Every ``{rank}_{item|photo|live}`` file directly inside each directory, in merge order.

    Order: directories as given, then rank ascending. Raises DataError naming every directory
    that is missing or holds no shard.
    """
    shards: list[Shard] = []
    problems = []
    for directory in map(Path, directories):
        if not directory.is_dir():
            problems.append(f"{directory}: not a directory")
            continue
        found = []
        for path in directory.iterdir():
            match = _SHARD_NAME.match(path.name)
            if not match:
                continue
            try:
                regular_input(path, "shard")
            except DataError as error:  # a pipe or a link to /dev/zero named like a shard: never read it
                problems.append(str(error).split(". Fix:")[0])
                continue
            found.append(Shard(path, int(match.group(1)), _DOMAIN_OF_SUFFIX[match.group(2)]))
        if not found:
            problems.append(f"{directory}: holds no infer.py output (files named 0_item, 0_photo, 0_live, …)")
        shards += sorted(found, key=lambda s: (s.rank, DOMAINS.index(s.domain)))
    if problems:
        raise DataError("convert cope: " + "; ".join(problems)
                        + ". Fix: pass the --output_dir of each infer.py run (one per node)")
    return shards


def _locate_problem(shard: Shard, dim: int | None) -> tuple[int, str] | None:
    """The first line the fast reader could not take, as ``(line number, what)``; error path only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n_fields = 4 if shard.domain == "L" else 2
    with open(shard.path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                return number, "is not UTF-8 text"
            if not line:
                continue  # blank lines are skipped by the fast reader as well
            fields = line.split("\t")
            if len(fields) != n_fields:
                return number, f"has {len(fields)} tab-separated field(s), expected {n_fields}"
            if not all(fields[:-1]):
                return number, "has an empty id field"
            values = fields[-1].split(",")
            if dim is not None and len(values) != dim:
                return number, f"has {len(values)} values, expected d={dim} like the lines before"
            dim = len(values)
            for value in values:  # the same parser as the fast path, so both agree on what is a number
                try:
                    parsed = pc.cast(pa.array([value]), pa.float64())[0].as_py()
                except pa.ArrowInvalid:
                    return number, f"holds {value!r}, which is not a number"
                if not np.isfinite(parsed):
                    return number, "holds NaN or ±inf"
    return None


def _fail(shard: Shard, dim: int | None, fallback: str) -> DataError:
    found = _locate_problem(shard, dim)
    where, what = (f"{shard.path}:{found[0]}", found[1]) if found else (str(shard.path), fallback)
    return DataError(f"{where}: {what}. Fix: re-run infer.py for this rank, or remove the damaged line "
                     "(each line is id<TAB>v1,…,vd; live lines are live_id<TAB>starttime<TAB>endtime<TAB>v1,…,vd)")


def read_shard(shard: Shard, *, live_id: str = DEFAULT_LIVE_ID, dim: int | None = None) -> ShardData:
    """Parse one shard with pyarrow (no Python loop per value).

    Args:
        shard: the file and its domain.
        live_id: template of a live item's id over ``{live_id}``, ``{starttime}``, ``{endtime}``.
        dim: the dimension every line must have (from earlier shards), or None.

    Raises:
        DataError: ``file:line`` of the first malformed line (field count, empty id, dimension,
            a value that is not a number, NaN or ±inf).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    names = [*LIVE_FIELDS, "vector"] if shard.domain == "L" else ["id", "vector"]
    if shard.path.stat().st_size == 0:  # a rank with nothing to write (or one that died): no rows
        empty = pa.array([], type=pa.string())
        return ShardData(shard, empty, empty, np.zeros((0, dim or 0), np.float32),
                         dict.fromkeys(LIVE_FIELDS, empty) if shard.domain == "L" else None, 0)
    try:
        table = pacsv.read_csv(
            shard.path,
            read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, double_quote=False,
                                             escape_char=False, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid as error:
        raise _fail(shard, dim, f"cannot be parsed ({error})") from None
    id_columns = [table.column(name).combine_chunks() for name in names[:-1]]
    if any(pc.any(pc.equal(column, "")).as_py() for column in id_columns if len(column)):
        raise _fail(shard, dim, "has an empty id field")
    lists = pc.split_pattern(table.column("vector").combine_chunks(), ",")
    lengths = to_numpy(pc.list_value_length(lists)).astype(np.int64)
    if len(lengths):
        dim = int(lengths[0]) if dim is None else dim
        if (lengths != dim).any():
            raise _fail(shard, dim, f"has rows whose dimension differs from d={dim}")
    try:
        values = to_numpy(pc.cast(pc.list_flatten(lists), pa.float64()))
    except pa.ArrowInvalid as error:
        raise _fail(shard, dim, f"holds a value that is not a number ({error})") from None
    with np.errstate(over="ignore"):  # beyond float32's range -> inf, refused just below
        matrix = values.astype(np.float32).reshape(len(lengths), dim or 0)
    if not np.isfinite(matrix).all():
        raise _fail(shard, dim, "holds NaN or ±inf, or values beyond float32's range")
    # Not a problem, but worth saying: values that were not float32 to begin with lose digits.
    rounded = int(np.count_nonzero(matrix.reshape(-1).astype(np.float64) != values))
    if shard.domain != "L":
        return ShardData(shard, id_columns[0], id_columns[0], matrix, None, rounded)
    fields = dict(zip(LIVE_FIELDS, id_columns))
    pieces: list[Any] = []
    for literal, name in live_id_parts(live_id):
        pieces += [literal] if literal else []
        pieces += [fields[name]] if name else []
    ids = pc.binary_join_element_wise(*pieces, "") if len(pieces) > 1 else fields["live_id"]
    keys = pc.binary_join_element_wise(*id_columns, "\t")  # a padded repeat repeats all three fields
    return ShardData(shard, ids, keys, matrix, fields, rounded)


def _deduplicate(keys: pa.Array, matrix: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Rows to keep (first copy of each key), the largest |difference| between copies, and the
    repeated rows whose vector differs from their first copy's (padding repeats a row exactly,
    so these are two different items under one id)."""
    import pyarrow.compute as pc

    codes = to_numpy(pc.index_in(keys, value_set=pc.unique(keys))).astype(np.int64)
    _, first = np.unique(codes, return_index=True)  # index of each key's first row
    keep = np.sort(first)
    if len(keep) == len(codes):
        return keep, 0.0, np.zeros(0, dtype=np.int64)
    repeats = np.setdiff1d(np.arange(len(codes)), keep, assume_unique=True)
    # Codes are 0..u-1, all present, so first[c] is the first row of code c.
    gaps = np.abs(matrix[repeats] - matrix[first[codes[repeats]]])
    differing = repeats[gaps.max(axis=1, initial=0.0) > 0] if gaps.size else np.zeros(0, dtype=np.int64)
    return keep, float(gaps.max(initial=0.0)), differing


def _repeated(ids: pa.Array) -> list[Any]:
    import pyarrow.compute as pc

    counts = pc.value_counts(ids)
    return counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()


def convert_cope(
    directories: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    manifest: str | os.PathLike[str] | None = None,
    require_complete: bool = False,
    live_id: str = DEFAULT_LIVE_ID,
    domain_prefix: bool = False,
) -> CopeReport:
    """Convert infer.py output directories (one per node) into one submission parquet.

    Item ids are the ids as text (``str``), exactly as infer.py wrote them; a live clip's id is
    ``live_id`` filled in (default ``{live_id}|{starttime}|{endtime}``) and its three raw fields
    are kept as columns ``live_id``, ``starttime``, ``endtime`` (null for P and V rows).

    Args:
        directories: infer.py ``--output_dir`` directories; merged in this order.
        out: the submission parquet to write (refused if it is one of the inputs).
        manifest: when given, per-domain coverage is reported, and a complete conversion is
            validated against it.
        require_complete: a manifest item without an embedding, or a converted item that is not
            in the manifest's domain, is a DataError instead of a note in the report.
        live_id: template of a live item's id.
        domain_prefix: prefix every id with its domain (``P:7``), for id spaces that overlap
            across domains; use the same option for ``convert rope-pairs``.

    Returns:
        A :class:`CopeReport` (counts, duplicates, coverage, what was validated).

    Raises:
        DataError: malformed line (``file:line``), ids repeated across domains, a coverage gap
            with ``require_complete``, or a written file that does not validate (then nothing is
            written). UsageError: a bad ``live_id`` template.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if require_complete and manifest is None:
        raise UsageError("--require-complete needs --manifest: completeness is measured against a manifest. "
                         "Fix: add --manifest MANIFEST, or drop --require-complete")
    live_id_parts(live_id)  # a bad template fails before any reading
    shards = find_shards(directories)
    inputs = [*directories, *(s.path for s in shards), *([manifest] if manifest is not None else [])]
    refuse_output_among_inputs(out, inputs)
    per_domain: dict[str, list[ShardData]] = {code: [] for code in DOMAINS}
    dim: int | None = None
    empty = [str(s.path) for s in shards if s.path.stat().st_size == 0]
    for shard in shards:
        data = read_shard(shard, live_id=live_id, dim=dim)
        dim = data.embeddings.shape[1] if len(data.embeddings) else dim
        per_domain[shard.domain].append(data)

    if dim is None:
        raise DataError(f"convert cope: the shards in {', '.join(map(str, directories))} hold no line at all. "
                        "Fix: pass the directories infer.py wrote after it finished")
    ids_parts, matrices, reports = [], [], []
    domains: list[str] = []
    live_columns: dict[str, pa.Array] = {}
    conflicts: list[str] = []
    for code, parts in per_domain.items():
        if not parts:
            continue
        matrix = np.concatenate([p.embeddings.reshape(len(p.embeddings), dim) for p in parts])
        keep, difference, differing = _deduplicate(pa.concat_arrays([p.keys for p in parts]), matrix)
        every_id = pa.concat_arrays([p.item_ids for p in parts])
        if len(differing):
            examples = every_id.take(pa.array(differing[:_EXAMPLES])).to_pylist()
            conflicts.append(f"{code}: {len(differing)} repeated id(s) carry a different vector than their first "
                             f"copy (largest difference {difference:.3g}), e.g. {examples}; the first copy was kept. "
                             "Padding repeats a row exactly, so two different items share these ids: check that "
                             "no two runs wrote into the same directory")
        ids = every_id.take(pa.array(keep))
        ids_parts.append(pc.binary_join_element_wise(f"{code}:", ids, "") if domain_prefix else ids)
        matrices.append(matrix[keep])
        if code == "L":  # the last domain: its raw fields, after nulls for every P and V row
            live_columns = {name: pa.concat_arrays([pa.nulls(len(domains), pa.string()), pa.concat_arrays(
                [p.live_fields[name] for p in parts if p.live_fields]).take(pa.array(keep))]) for name in LIVE_FIELDS}
        domains += [code] * len(keep)
        reports.append(DomainReport(code, len(parts), len(matrix), len(matrix) - len(keep), difference, len(keep)))
    all_ids = pa.concat_arrays(ids_parts)
    all_domains = pa.array(domains, type=pa.string())
    repeated = _repeated(all_ids)
    if repeated:
        raise DataError(f"convert cope: {len(repeated)} item id(s) name more than one item (in two domains, or "
                        f"two live clips under --live-id {live_id!r}), e.g. {repeated[:_EXAMPLES]}. Fix: pass "
                        "--domain-prefix (and the same to convert rope-pairs), or a --live-id with all three fields")

    notes = [f"{len(empty)} empty shard file(s), e.g. {empty[0]}: did that rank finish?"] if empty else []
    notes += conflicts
    if manifest is not None:
        coverage = manifest_coverage(manifest, all_ids, all_domains)
        reports = [DomainReport(**{**r.__dict__, **coverage[r.domain]}) for r in reports]
        seen = {r.domain for r in reports}
        reports += [DomainReport(code, 0, 0, 0, 0.0, 0, **coverage[code]) for code in DOMAINS
                    if code not in seen and coverage[code]["manifest_items"]]
    complete = manifest is not None and not any(r.missing or r.unknown for r in reports)
    if manifest is not None and not complete:
        gap = "; ".join(f"{r.domain}: {r.missing} missing, {r.unknown} unknown" for r in reports
                        if r.missing or r.unknown)
        if require_complete:
            raise DataError(f"convert cope: the shards do not cover manifest {manifest} ({gap}); nothing was "
                            "written. Fix: convert every node's output directory, and check --live-id and "
                            "--domain-prefix match the manifest's ids")
        notes.append(f"coverage gap against {manifest} ({gap}): the file cannot be evaluated with it as is")

    rounded = sum(p.rounded_values for parts in per_domain.values() for p in parts)
    if rounded:
        notes.append(f"{rounded} value(s) were not float32 in the shards and were rounded to float32")
    metadata = {"converter": "cope", "sources": source_records([s.path for s in shards]
                                                                + ([manifest] if manifest is not None else [])),
                "options": {"live_id": live_id, "domain_prefix": domain_prefix,
                            "require_complete": require_complete},
                "report": {r.domain: r.to_json() for r in reports}}
    table = submission_table(all_ids, np.concatenate(matrices), domains, metadata=metadata,
                             extra_columns=live_columns)
    check: list[str] = []
    write_table_atomically(out, table, check=lambda tmp: check.append(
        check_submission_file(tmp, manifest if complete else None)))
    return CopeReport(os.fspath(out), int(dim or 0), tuple(os.fspath(d) for d in directories), tuple(reports),
                      rounded, check[0], tuple(notes))
