"""Compiled kernels (numba, the ``fast`` extra): few-shot's pruned combinations
(:mod:`ropebench.engines.kernels.fewshot`) and the one-pass engine's tile selection
(:mod:`ropebench.engines.kernels.select`). Importing this package does not import numba; each module
does, and is imported only where numba is :func:`available`. Every kernel has a numpy counterpart
that gives the same counts; tests run both."""

from __future__ import annotations

import importlib
import importlib.util
import warnings

__all__ = ["available", "chosen"]

_MODULES = ("ropebench.engines.kernels.fewshot", "ropebench.engines.kernels.levels",
            "ropebench.engines.kernels.select")
_AVAILABLE: list[bool] = []  # the answer, once known (one import per process)


def available() -> bool:
    """Whether the kernels can run: numba imports and so do the kernel modules. Their import can
    fail where numba has nowhere to write its cache (no writable ``__pycache__`` beside the package
    and no writable user cache directory): then a warning says so once and numpy computes the same
    numbers. The first call imports numba (about 0.2 s); callers ask only for searches large enough
    to use the kernels. The kernels compile on first use and are cached on disk."""
    if not _AVAILABLE:
        found = importlib.util.find_spec("numba") is not None
        if found:
            try:
                for name in _MODULES:
                    importlib.import_module(name)
            except Exception as error:  # numba's own errors (e.g. "no locator available"), any kind
                warnings.warn(f"ropebench: numba is installed but its kernels cannot load ({error}); numpy "
                              "computes the same numbers, more slowly (set NUMBA_CACHE_DIR to a writable "
                              "directory to use them)", RuntimeWarning, stacklevel=2)
                found = False
        _AVAILABLE.append(found)
    return _AVAILABLE[0]


def chosen(setting: bool | None, size: int, threshold: int, what: str) -> bool:
    """Whether a search runs its kernels: ``setting`` when given (true without loadable kernels:
    an ImportError naming the extra), else where they are :func:`available` and the search's
    ``size`` reaches ``threshold`` (importing numba and loading a kernel take about half a second,
    which only large searches repay; the size is compared first, so small ones never import numba).
    ``what`` names the kernels in the error."""
    if setting is None:
        return size >= threshold and available()
    if setting and not available():
        raise ImportError(f"{what}: numba is needed, pip install 'ropebench[fast]'")
    return setting
