"""``leaderboard init``: a new suite — a lab's own leaderboard — declaring the test set it is about.

A suite is about a manifest (its sha256 is recorded, with its path when it lies below the
directory holding the root, and its item and product counts) or, when the manifest is not
public, about declared counts: items per domain and products. ``add`` then refuses results
computed on anything else. The suite file and its README block are written in one transaction.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ropebench.errors import DataError, UsageError
from ropebench.io.files import sha256_file
from ropebench.leaderboard import paths
from ropebench.leaderboard.add import dumps
from ropebench.leaderboard.integrity import describe, labels_summary
from ropebench.leaderboard.readme import readme_with
from ropebench.leaderboard.schema import SUITE_SCHEMA, check_suite
from ropebench.leaderboard.store import README, SUITE_FILE, Suite, View, base_of, check_suite_name
from ropebench.leaderboard.transaction import commit, exclusive
from ropebench.protocol import DEFAULT_KS, DOMAINS, measure_names

__all__ = ["init_suite", "manifest_declaration"]


def manifest_declaration(manifest: str | os.PathLike[str], base: Path) -> tuple[dict[str, Any], dict[str, int], int]:
    """``{"path"?, "sha256"}`` of a manifest, its items per domain and its products.

    The path is kept when the manifest lies below ``base`` (links resolved); a manifest kept
    elsewhere (not public) is declared by its sha256 alone.
    """
    path = Path(manifest)
    paths.check_regular(path, "--manifest", directory_ok=True)
    items, products = labels_summary(path, "manifest")
    declaration: dict[str, Any] = {"sha256": sha256_file(path)}
    real, real_base = Path(os.path.realpath(path)), Path(os.path.realpath(base))
    if real_base in real.parents:
        declaration = {"path": real.relative_to(real_base).as_posix(), **declaration}
    return declaration, items, products


def init_suite(
    root: Path,
    name: str,
    *,
    manifest: str | os.PathLike[str] | None = None,
    items: Mapping[str, int] | None = None,
    products: int | None = None,
    title: str | None = None,
    description: str = "",
    label_column: str = "model",
    protocol: Mapping[str, Any] | None = None,
    metrics: Sequence[str] | None = None,
    captions: Mapping[str, str] | None = None,
) -> Path:
    """Create suite ``name`` under ``root`` (created if missing) and its README block; return
    the suite file's path.

    Args:
        manifest: the manifest the suite is about (sha256, path when inside, counts recorded).
        items, products: declared counts (``{"P": 31388, "V": 29810, "L": 30981}``, 2527);
            with ``manifest`` they must agree with it.
        protocol: fields every entry must have (default: cosine, expected ties, Ks 1,5,10,20,50,
            exact search).
        metrics: table columns (default: ``R@K`` for each K of the protocol).

    Raises:
        UsageError: bad name, no declaration, or the suite exists. DataError: unreadable
            manifest, counts that disagree with it, or a root that cannot be written.
    """
    check_suite_name(name)
    root = Path(root)
    if manifest is None and (items is None or products is None):
        raise UsageError("a suite declares the test set it is about: pass --manifest M, or --items P,V,L and "
                         "--products N when the manifest is not public")
    spec: dict[str, Any] = {
        "schema": SUITE_SCHEMA, "name": name, "title": title or name, "description": description,
        "label_column": label_column, "entries": [],
        "captions": dict(captions or {"1": "Cross-domain retrieval", "2": "Intra-domain retrieval"}),
    }
    protocol = dict(protocol or {"metric": "cosine", "ties": "expected", "ks": list(DEFAULT_KS), "search": "exact"})
    spec["metrics"] = list(metrics or [m for m in measure_names(tuple(protocol.get("ks", DEFAULT_KS)))
                                       if m.startswith("R@")])
    spec["protocol"] = protocol
    spec["manifest"] = None
    if manifest is not None:
        declaration, counted, distinct = manifest_declaration(manifest, base_of(root))
        if items is not None and dict(items) != counted or products is not None and products != distinct:
            raise DataError(f"--manifest {manifest} has {describe(counted, distinct)}, not the declared "
                            f"{describe(items or {}, products)}. Fix: check the counts or the manifest")
        spec["manifest"] = declaration
        items, products = counted, distinct
    spec["items"] = {d: int((items or {}).get(d, 0)) for d in DOMAINS}
    spec["products"] = products
    problems = check_suite(spec)
    if problems:
        raise UsageError(f"suite {name!r} cannot be created:\n  - " + "\n  - ".join(problems))
    root.mkdir(parents=True, exist_ok=True)
    directory = root / name
    with exclusive(root):
        view = View(root)
        if view.exists(directory / SUITE_FILE):
            raise UsageError(f"suite {name!r} exists ({directory / SUITE_FILE}): edit its suite.json, or choose "
                             "another name")
        created = not directory.exists()
        directory.mkdir(exist_ok=True)
        try:
            text = readme_with(root, [Suite(name, directory, spec, ())], view=view)
            commit(root, {directory / SUITE_FILE: dumps(spec).encode("utf-8"), root / README: text.encode("utf-8")})
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise
    return directory / SUITE_FILE
