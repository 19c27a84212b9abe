"""A minimal progress bar on stderr: shown only on a terminal and never with ``quiet``."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts units of work for a label and redraws one stderr line at most 10 times a second."""

    def __init__(self, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.label, self.total, self.done, self.unit, self._drawn = "", 0, 0, "queries", 0.0

    def start(self, label: str, total: int, unit: str = "queries") -> None:
        self.label, self.total, self.done, self.unit = label, max(total, 1), 0, unit
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done += n
        self._draw(force=self.done >= self.total)

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, *, force: bool) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        width = 30
        filled = int(width * min(self.done, self.total) / self.total)
        self.stream.write(f"\r{self.label:<4} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{min(self.done, self.total)}/{self.total} {self.unit}")
        self.stream.flush()
