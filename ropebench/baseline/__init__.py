"""The reference baseline: a COPE-style trainer that reproduces the paper's L_cd ablation.

``simulate`` (NumPy only) writes ROPE-like per-item features; ``train`` (needs the ``baseline``
extra, i.e. torch) learns per-domain encoders into one shared 128-d space with a classification
loss, optionally plus the cross-domain contrastive loss L_cd, and embeds the test items::

    from ropebench.baseline import simulate, write_simulation, train, TrainConfig, write_submission
    write_simulation(simulate(seed=0), "sim")
    result = train("sim", TrainConfig(loss="cls+cd"))
    write_submission("cls_cd.parquet", result.item_ids, result.embeddings)

Importing this package never imports torch; ``train`` loads it on first
use and raise ``MissingExtraError`` (one line, with the install command) when it is missing.
"""

from __future__ import annotations

from typing import Any

from ropebench.baseline.config import LOSSES, TrainConfig
from ropebench.baseline.files import load_split, write_submission
from ropebench.baseline.simulate import Simulation, SimulationConfig, simulate, write_simulation
from ropebench.errors import MissingExtraError

__all__ = [
    "INSTALL_HINT",
    "LOSSES",
    "Simulation",
    "SimulationConfig",
    "TrainConfig",
    "TrainResult",
    "load_split",
    "require_torch",
    "simulate",
    "train",
    "write_simulation",
    "write_submission",
]

INSTALL_HINT = 'pip install -e ".[baseline]" (here: pip install torch==2.13.0, the CPU build)'


def require_torch(what: str = "ropebench baseline train") -> None:
    """Raise MissingExtraError (one line naming the install command) if torch cannot be imported.

    Before the first import of torch, OpenMP's idle threads are told to sleep rather than spin
    (``OMP_WAIT_POLICY=PASSIVE`` unless the user set it): spinning threads fight every other
    process for the cores. Measured on a 2-core machine beside two busy processes, 20 epochs of
    ``cls+cd`` on 600 simulated products: 74.2 s and 11.5 s spinning, 8.6 s and 6.4 s passive
    (two rounds); quiet, both ~2.5-4 s. Results are unchanged (the policy only decides how an
    idle thread waits; the final loss is identical).
    """
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingExtraError(f"{what} needs PyTorch, which is not installed: {INSTALL_HINT}") from None


def __getattr__(name: str) -> Any:
    # torch-backed names load lazily so that `import ropebench.baseline` stays torch-free.
    if name in ("train", "TrainResult"):
        require_torch(f"ropebench.baseline.{name}")
        from ropebench.baseline import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'ropebench.baseline' has no attribute {name!r}")
