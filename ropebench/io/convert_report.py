"""What a converter reports: per-domain counts, coverage against a manifest, and the summary the CLI prints.

:func:`manifest_coverage` compares converted ids with a manifest, domain by domain; the report
classes carry the counts of a conversion (``to_json()`` goes into the submission's metadata,
``summary()`` to stderr).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ropebench.errors import DataError
from ropebench.io.parquet import read_source
from ropebench.protocol import DOMAINS, canonical_domain

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = ["CopeReport", "DomainReport", "manifest_coverage"]

_EXAMPLES = 5


@dataclass(frozen=True)
class DomainReport:
    """What a domain's shards held and what was written; coverage fields are None without a manifest."""

    domain: str
    files: int
    rows: int
    duplicates: int
    max_duplicate_difference: float
    items: int
    manifest_items: int | None = None
    missing: int | None = None
    unknown: int | None = None
    missing_examples: tuple[Any, ...] = ()
    unknown_examples: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CopeReport:
    """The outcome of :func:`ropebench.io.cope.convert_cope`; ``summary()`` is what the CLI prints to stderr."""

    out: str
    dim: int
    directories: tuple[str, ...]
    domains: tuple[DomainReport, ...]
    rounded_values: int
    check: str
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        files = sum(d.files for d in self.domains)
        n_dirs = len(self.directories)
        lines = [f"read {files} shard file(s) from {n_dirs} director{'y' if n_dirs == 1 else 'ies'}, d={self.dim}"]
        header = ["domain", "files", "rows", "duplicates", "max|diff|", "items"]
        with_manifest = any(d.manifest_items is not None for d in self.domains)
        if with_manifest:
            header += ["manifest", "missing", "unknown"]
        rows = [header]
        for d in self.domains:
            row = [d.domain, d.files, d.rows, d.duplicates, f"{d.max_duplicate_difference:.3g}", d.items]
            if with_manifest:
                row += [d.manifest_items, d.missing, d.unknown]
            rows.append([str(v) for v in row])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        for d in self.domains:
            if d.missing:
                lines.append(f"{d.domain}: {d.missing} manifest item(s) without an embedding, e.g. "
                             + ", ".join(map(repr, d.missing_examples)))
            if d.unknown:
                lines.append(f"{d.domain}: {d.unknown} item(s) not in the manifest's {d.domain}, e.g. "
                             + ", ".join(map(repr, d.unknown_examples)))
        lines += list(self.notes)
        lines.append(f"wrote {self.out} ({sum(d.items for d in self.domains)} items); {self.check}")
        return "\n".join(lines) + "\n"


def manifest_coverage(manifest: str | os.PathLike[str], ids: pa.Array, domains: pa.Array) -> dict[str, dict[str, Any]]:
    """Per domain: manifest size, items missing from the shards, shard items not in the manifest."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = read_source(manifest, what="manifest").table
    absent = [c for c in ("item_id", "domain") if c not in table.column_names]
    if absent:
        raise DataError(f"manifest {manifest}: column(s) {', '.join(absent)} missing. "
                        "Fix: a manifest has item_id, domain and product_id")
    manifest_ids = pc.cast(table.column("item_id").combine_chunks(), pa.string())
    raw_domains = table.column("domain").combine_chunks().cast(pa.string())
    spellings = pc.unique(raw_domains).to_pylist()
    codes = {s: canonical_domain(s) for s in spellings}
    unknown = [s for s, c in codes.items() if c is None]
    if unknown:
        raise DataError(f"manifest {manifest} column 'domain': unknown domain(s) {unknown[:_EXAMPLES]}. "
                        "Fix: use P/V/L or page/video/live")
    manifest_domains = pa.array([codes[s] for s in spellings], type=pa.string()).take(
        pc.index_in(raw_domains, value_set=pa.array(spellings, type=pa.string())))
    manifest_keys = pc.binary_join_element_wise(manifest_domains, manifest_ids, "\t")
    keys = pc.binary_join_element_wise(domains, ids, "\t")
    coverage: dict[str, dict[str, Any]] = {}
    for code in DOMAINS:
        in_manifest = pc.equal(manifest_domains, code)
        ours = pc.equal(domains, code)
        missing = pc.filter(manifest_ids, pc.and_(in_manifest, pc.invert(pc.is_in(manifest_keys, value_set=keys))))
        extra = pc.filter(ids, pc.and_(ours, pc.invert(pc.is_in(keys, value_set=manifest_keys))))
        coverage[code] = {"manifest_items": int(pc.sum(in_manifest).as_py() or 0),
                          "missing": len(missing), "unknown": len(extra),
                          "missing_examples": tuple(missing[:_EXAMPLES].to_pylist()),
                          "unknown_examples": tuple(extra[:_EXAMPLES].to_pylist())}
    return coverage
