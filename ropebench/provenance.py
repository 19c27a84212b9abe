"""What a results file records about where it came from: versions, machine, input hashes."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any

__all__ = ["environment", "utc_now", "cpu_name"]


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
