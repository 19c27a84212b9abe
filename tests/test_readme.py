"""The README's commands are real: its sample output is what the first command prints now.

Refresh on purpose with ROPEBENCH_UPDATE_GOLDEN=1 (e.g. after regenerating the sample).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- BEGIN sample output -->\n)(.*?)(<!-- END sample output -->)", re.S)


def quick_start_command() -> list[str]:
    text = README.read_text(encoding="utf-8")
    line = next(l for l in text.splitlines() if l.startswith("python -m venv") and "ropebench evaluate" in l)
    return line.split("&& ropebench ")[1].split()


def test_readme_sample_output_is_current():
    args = quick_start_command()
    assert args[0] == "evaluate"
    done = subprocess.run([sys.executable, "-m", "ropebench", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = f"```\n$ ropebench {' '.join(args)}\n{done.stdout}```\n"
    text = README.read_text(encoding="utf-8")
    if os.environ.get("ROPEBENCH_UPDATE_GOLDEN") == "1":
        README.write_text(BLOCK.sub(lambda m: m.group(1) + expected + m.group(3), text), encoding="utf-8")
    assert BLOCK.search(text).group(2) == expected


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in README.read_text(encoding="utf-8")
    assert "python -m pytest -q" in ci
