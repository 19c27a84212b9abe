"""The ropebench error hierarchy.

Library code raises these; only the command line turns them into exit codes
(``RopebenchError`` -> exit 2 with its message, never a traceback).
"""

from __future__ import annotations

__all__ = ["RopebenchError", "DataError", "UsageError", "MissingExtraError"]


class RopebenchError(Exception):
    """Base class of every error ropebench raises on purpose."""


class DataError(RopebenchError, ValueError):
    """An input file or array is malformed. The message names file, column, count, ids and the fix."""


class UsageError(RopebenchError, ValueError):
    """An option has a value that cannot be used (unknown task, K <= 0, ...)."""


class MissingExtraError(RopebenchError, ImportError):
    """An optional dependency (an extra such as ``baseline``) is not installed."""
