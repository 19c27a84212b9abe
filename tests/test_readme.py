"""The README's commands are real: every output block is what its command prints now.

A block is a fenced ``$ ropebench ARGS`` line plus its output, between ``<!-- BEGIN output -->``
and ``<!-- END output -->``. Refresh on purpose with ROPEBENCH_UPDATE_GOLDEN=1 (e.g. after
regenerating the sample), then review the diff.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- BEGIN output -->\n```\n\$ ropebench (?P<args>[^\n]*)\n(?P<output>.*?)```\n"
                   r"<!-- END output -->", re.S)


def run(args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ropebench", *shlex.split(args)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_output_blocks_are_current():
    text = README.read_text(encoding="utf-8")
    blocks = list(BLOCK.finditer(text))
    assert len(blocks) >= 4
    if os.environ.get("ROPEBENCH_UPDATE_GOLDEN") == "1":
        fresh = BLOCK.sub(lambda m: f"<!-- BEGIN output -->\n```\n$ ropebench {m.group('args')}\n"
                                    f"{run(m.group('args'))}```\n<!-- END output -->", text)
        README.write_text(fresh, encoding="utf-8")
    for block in blocks:
        assert run(block.group("args")) == block.group("output"), f"README block `ropebench {block.group('args')}`"


def test_quick_start_runs_the_first_block():
    text = README.read_text(encoding="utf-8")
    line = next(row for row in text.splitlines() if row.startswith("python -m venv") and "ropebench evaluate" in row)
    assert line.split("&& ropebench ")[1] == BLOCK.search(text).group("args")


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\npython -m pytest -q\n" in README.read_text(encoding="utf-8")
    assert "\npython -m pytest -q\n" in ci
