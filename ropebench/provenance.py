"""What a results file records about where it came from: versions, machine, input hashes."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any

__all__ = ["environment", "utc_now", "cpu_name", "input_record"]


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str, distributions: tuple[str, ...]) -> str:
    """A module's version without importing it when it is not loaded yet (faiss and pyarrow each
    take 0.15-0.25 s to import, and the default engine needs neither for arrays)."""
    from importlib import import_module, metadata

    if module not in sys.modules:
        for name in distributions:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
    return str(import_module(module).__version__)


def environment(threads: int, *, faiss_ran: bool = False) -> dict[str, Any]:
    """Python, the libraries that actually ran (numpy always; pyarrow when files were read;
    FAISS only when a FAISS search ran), the machine and the thread count."""
    import numpy

    env: dict[str, Any] = {"python": sys.version.split()[0], "numpy": numpy.__version__}
    if faiss_ran:
        env["faiss"] = _version("faiss", ("faiss-cpu", "faiss", "faiss-gpu"))
    if "pyarrow" in sys.modules:
        env["pyarrow"] = _version("pyarrow", ("pyarrow",))
    env.update(platform=platform.platform(), cpu=cpu_name(), cpu_count=os.cpu_count(), threads=threads)
    return env


def input_record(submission: Any, manifest: Any, dataset: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What a results file records about its inputs: paths, sha256, item count, d and dtype."""
    import hashlib

    import numpy as np

    from ropebench.io.files import sha256_file

    if submission is not None:
        record: dict[str, Any] = {"path": str(submission), "sha256": sha256_file(submission)}
        manifest_record = None if manifest is None else {"path": str(manifest), "sha256": sha256_file(manifest)}
    else:
        matrix = np.ascontiguousarray(dataset.embeddings)
        digest = hashlib.sha256(memoryview(matrix).cast("B")).hexdigest()  # type: ignore[arg-type]
        record = {"path": None, "sha256": digest}
        manifest_record = None
    record.update(n_items=dataset.n_items, dim=dataset.dim, dtype=dataset.dtype)
    return record, manifest_record
