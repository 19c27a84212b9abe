"""The leaderboard: suites of entries under ``leaderboards/`` (schema, store, readme, verify).

Layout (paths inside entries are relative to the directory that holds ``leaderboards/``)::

    leaderboards/README.md              how to submit, and one generated block per suite
    leaderboards/<suite>/suite.json     entry order, label column, captions, expected protocol
    leaderboards/<suite>/<entry>.json   one entry (schema ropebench.entry/1)
"""

from __future__ import annotations

from ropebench.leaderboard.readme import render_readme, rendered_block
from ropebench.leaderboard.store import (
    README,
    SUITE_FILE,
    Suite,
    add_entry,
    entry_matrix,
    find_root,
    load_suite,
    read_json,
    suite_names,
    suite_tables,
)
from ropebench.leaderboard.verify import VerifyReport, verify

__all__ = ["README", "SUITE_FILE", "Suite", "VerifyReport", "add_entry", "entry_matrix", "find_root", "load_suite",
           "read_json", "render_readme", "rendered_block", "suite_names", "suite_tables", "verify"]
