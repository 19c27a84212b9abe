"""Regenerate the bundled sample bit for bit from the reference baseline (needs torch).

    python sample_embeddings/regenerate.py               # rewrites the three files beside this script
    python sample_embeddings/regenerate.py --out /tmp/s  # or anywhere else

It runs exactly this shell sequence (defaults throughout; SIM is a temporary directory):

    ropebench baseline simulate --out SIM --seed 0
    ropebench baseline train SIM --loss cls    --seed 0 --out cls.parquet
    ropebench baseline train SIM --loss cls+cd --seed 0 --out cls_cd.parquet
    cp SIM/test_manifest.parquet manifest.parquet

and writes ``manifest.parquet`` (2,632 test items of 300 unseen products), ``cls.parquet``
(classification loss only) and ``cls_cd.parquet`` (with L_cd): float32, 128-d, ~2 MB each.
The outputs are identical byte for byte on every run with the same versions of ropebench,
NumPy, torch (CPU, 2 threads) and pyarrow; another CPU architecture or library version may
change the last bits of the embeddings, and then the ``rope-sim`` leaderboard entries must be
recomputed. Each training arm takes well under two minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = "0"
ARMS = (("cls", "cls.parquet"), ("cls+cd", "cls_cd.parquet"))


def ropebench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ropebench", "baseline", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the three files "
                        "(default: beside this script)")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ropebench-sim-") as sim:
        ropebench("simulate", "--out", sim, "--seed", SEED)
        for loss, name in ARMS:
            ropebench("train", sim, "--loss", loss, "--seed", SEED, "--out", str(out / name))
        shutil.copyfile(Path(sim) / "test_manifest.parquet", out / "manifest.parquet")
    for name in ("manifest.parquet", *(name for _, name in ARMS)):
        print(out / name)


if __name__ == "__main__":
    main()
