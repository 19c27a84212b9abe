"""Hyper-parameters of the baseline trainer (torch-free, so the CLI can show the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOSSES", "TrainConfig"]

# The two arms of the paper's ablation: classification only, and + the cross-domain loss L_cd.
LOSSES: tuple[str, ...] = ("cls", "cls+cd")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. The defaults are the ones the README's numbers come from.

    Attributes:
        loss: ``cls`` or ``cls+cd``.
        epochs: passes over the training products.
        seed: seeds the weight generator and the batch sampler.
        dim: embedding size (128, as COPE).
        hidden: hidden width of each domain's MLP.
        batch_products: products per batch; each brings up to ``items_per_domain`` items from
            every domain it has.
        lr / weight_decay: AdamW, cosine-decayed to 0 over the run.
        cd_weight: weight of L_cd in ``cls+cd``. temperature: InfoNCE temperature of L_cd.
        scale / margin: CosFace ``s`` and ``m``.
        threads: torch CPU threads, fixed so that results do not depend on the machine's cores.
    """

    loss: str = "cls"
    epochs: int = 30
    seed: int = 0
    dim: int = 128
    hidden: int = 256
    batch_products: int = 128
    items_per_domain: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    cd_weight: float = 1.0
    temperature: float = 0.05
    scale: float = 30.0
    margin: float = 0.2
    threads: int = 2
