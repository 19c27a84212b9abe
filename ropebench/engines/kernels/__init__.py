"""Compiled kernels (numba, the ``fast`` extra): few-shot's pruned combinations
(:mod:`ropebench.engines.kernels.fewshot`) and the one-pass engine's tile selection
(:mod:`ropebench.engines.kernels.select`). Importing this package does not import numba; each module
does, and is imported only where numba is :func:`available`. Every kernel has a numpy counterpart
that gives the same counts; tests run both."""

from __future__ import annotations

import importlib.util

__all__ = ["available"]


def available() -> bool:
    """Whether numba can be imported (the kernels compile on first use and are cached on disk)."""
    return importlib.util.find_spec("numba") is not None
