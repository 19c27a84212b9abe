"""The leaderboard: suites of entries under ``leaderboards/`` (schema, store, add, init, readme, verify).

Layout (paths inside entries are relative to the directory that holds ``leaderboards/``)::

    leaderboards/README.md                      how to submit, and one generated block per suite
    leaderboards/<suite>/suite.json             entry order, label column, captions, protocol, test set
    leaderboards/<suite>/<entry>.json           one entry (schema ropebench.entry/1)
    leaderboards/<suite>/<entry>.per_query.parquet   a computed entry's per-query table

Every change is one transaction under the root's lock (:mod:`ropebench.leaderboard.transaction`).
"""

from __future__ import annotations

from ropebench.leaderboard.add import add_entry
from ropebench.leaderboard.create import init_suite
from ropebench.leaderboard.readme import render_readme, rendered_block
from ropebench.leaderboard.store import (
    README,
    SUITE_FILE,
    Suite,
    entry_matrix,
    find_root,
    load_suite,
    read_json,
    read_suite,
    suite_names,
    suite_tables,
)
from ropebench.leaderboard.verify import VerifyReport, verify

__all__ = ["README", "SUITE_FILE", "Suite", "VerifyReport", "add_entry", "entry_matrix", "find_root", "init_suite",
           "load_suite", "read_json", "read_suite", "render_readme", "rendered_block", "suite_names", "suite_tables",
           "verify"]
