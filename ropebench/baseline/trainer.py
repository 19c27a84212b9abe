"""Train the reference baseline on simulated features and embed the test items (needs torch).

Two arms reproduce the paper's ablation (Table 1/Table 2 of the ROPE supplementary):

- ``cls``: CosFace classification over training products with per-domain classifier weights;
- ``cls+cd``: the same plus L_cd, the cross-domain InfoNCE loss (``model.py`` explains both).

Both arms see exactly the same batches: each batch draws ``batch_products`` training products
that have items in at least two domains and, for each such product, up to ``items_per_domain``
items from every domain it has — so every product of a batch appears in at least two domains
and L_cd always has positives.

Determinism: weights come from a ``torch.Generator`` and batches from
``np.random.default_rng``, both seeded with ``seed``; training runs with
``torch.use_deterministic_algorithms(True)`` and a fixed thread count (restored afterwards).
The same seed, thread count, data and library versions give the same embeddings bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from ropebench.baseline.config import LOSSES, TrainConfig
from ropebench.baseline.files import load_split
from ropebench.baseline.model import CosFaceHead, Encoders, cross_domain_infonce
from ropebench.errors import DataError, UsageError
from ropebench.protocol import DOMAINS

__all__ = ["TrainResult", "train"]

@dataclass(frozen=True)
class TrainResult:
    """Test-item embeddings and the training record.

    Attributes:
        item_ids: ``(n,)`` test item ids, in the order of ``test.parquet``.
        domains: ``(n,)`` domain codes. embeddings: ``(n, dim)`` float32, unit norm.
        epoch_losses: mean training loss of each epoch. seconds: wall time of training.
    """

    config: TrainConfig
    item_ids: np.ndarray = field(repr=False)
    domains: np.ndarray = field(repr=False)
    embeddings: np.ndarray = field(repr=False)
    epoch_losses: tuple[float, ...]
    seconds: float


def _batches(rng: np.random.Generator, groups: list[list[np.ndarray]], batch_products: int,
             items_per_domain: int) -> Iterator[np.ndarray]:
    """One epoch of batches: row indices, every product present in >= 2 domains."""
    order = rng.permutation(len(groups))
    for start in range(0, len(order), batch_products):
        rows = []
        for product in order[start:start + batch_products]:
            for items in groups[product]:
                take = min(items_per_domain, len(items))
                rows.append(items[rng.choice(len(items), size=take, replace=False)])
        yield np.concatenate(rows)


class _Progress:
    """Progress with the running loss and an ETA on stderr: a bar redrawn in place on a terminal,
    or (``"epochs"``) one line per finished epoch, for a pipe or a log file, which a bar would
    only fill with carriage returns and which otherwise saw nothing for minutes."""

    def __init__(self, total: int, label: str, stream: TextIO | None, enabled: bool | str | None) -> None:
        self.stream = stream or sys.stderr
        terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        # None: a bar on a terminal, else nothing; True: a bar; "epochs": one line per epoch.
        self.enabled = enabled is not False and (enabled is not None or terminal)
        self.bar = enabled is True or (enabled is None and terminal)
        self.total, self.label, self.done, self.logged_epoch = total, label, 0, 0
        self.started = time.perf_counter()

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = max(0, int(round(seconds)))
        return f"{seconds // 60}:{seconds % 60:02d}"

    def update(self, epoch: int, epochs: int, loss: float) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        if self.bar:
            width = 24
            filled = width * self.done // self.total
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] epoch {epoch}/{epochs} "
                              f"loss {loss:.4f} {self._clock(elapsed)} elapsed, ETA {self._clock(left)}")
            self.stream.flush()
        elif epoch > self.logged_epoch and (self.done * epochs) // self.total >= epoch:
            self.logged_epoch = epoch  # the last step of this epoch: one line
            self.stream.write(f"{self.label}: epoch {epoch}/{epochs} done, loss {loss:.4f}, "
                              f"{self._clock(elapsed)} elapsed, ETA {self._clock(left)}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.bar:
            self.stream.write("\n")
            self.stream.flush()


@contextlib.contextmanager
def _deterministic_torch(threads: int) -> Iterator[None]:
    """Deterministic kernels, a fixed thread count and flushed denormals, then restore.

    Flushing denormals matters for speed, not accuracy: Adam's moment estimates of the
    classifier rows of products absent from a batch decay geometrically into the denormal range
    after a few hundred steps, and denormal arithmetic made training ~10x slower on x86.
    torch has no getter for that flag; it is reset to torch's default (off) afterwards.
    """
    previous_threads = torch.get_num_threads()
    previous_mode = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.use_deterministic_algorithms(previous_mode)
        torch.set_num_threads(previous_threads)


def _check(config: TrainConfig) -> None:
    problems = []
    if config.loss not in LOSSES:
        problems.append(f"loss must be one of {', '.join(LOSSES)}, got {config.loss!r}")
    for name in ("epochs", "dim", "hidden", "batch_products", "items_per_domain", "threads"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.temperature <= 0:
        problems.append(f"temperature must be positive, got {config.temperature}")
    if problems:
        raise UsageError("; ".join(problems))


def train(data_dir: str | os.PathLike[str], config: TrainConfig | None = None, *,
          progress: bool | str | None = None, stream: TextIO | None = None) -> TrainResult:
    """Train one arm on ``data_dir/train.parquet`` and embed ``data_dir/test.parquet``.

    Args:
        data_dir: a directory written by ``ropebench baseline simulate``.
        config: hyper-parameters (default ``TrainConfig()``, the ``cls`` arm).
        progress: show the progress bar; None = only when ``stream`` is a terminal; ``"epochs"``
            = one line per finished epoch with the loss and an ETA (for pipes and logs).
        stream: where the progress bar goes (default stderr).

    Returns:
        ``TrainResult`` with float32 unit-norm test embeddings, shape ``(n_test, dim)``.
    """
    config = config or TrainConfig()
    _check(config)
    data_dir = Path(data_dir)
    train_split = load_split(data_dir / "train.parquet", labelled=True)
    test_split = load_split(data_dir / "test.parquet", labelled=False)
    if train_split["features"].shape[1] != test_split["features"].shape[1]:
        raise DataError(f"{data_dir}: train and test features differ in size "
                        f"({train_split['features'].shape[1]} vs {test_split['features'].shape[1]})")

    _, labels = np.unique(train_split["product_id"].astype(str), return_inverse=True)
    domain_index = np.array([DOMAINS.index(d) for d in train_split["domain"]])
    classes = int(labels.max()) + 1
    # groups[c] = item rows of class c, one array per domain it has; keep products in >= 2 domains.
    by_key: dict[tuple[int, int], list[int]] = {}
    for row, (label, d) in enumerate(zip(labels, domain_index)):
        by_key.setdefault((int(label), int(d)), []).append(row)
    groups_of: dict[int, list[np.ndarray]] = {}
    for (label, _domain), item_rows in sorted(by_key.items()):
        groups_of.setdefault(label, []).append(np.array(item_rows))
    groups = [g for _, g in sorted(groups_of.items()) if len(g) >= 2]
    if not groups:
        raise DataError(f"{data_dir / 'train.parquet'}: no product has items in two domains")

    with _deterministic_torch(config.threads):
        generator = torch.Generator().manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        features = torch.from_numpy(train_split["features"])
        stats = {}
        for d, code in enumerate(DOMAINS):
            domain_rows = features[torch.from_numpy(domain_index == d)]
            if len(domain_rows) < 2:
                raise DataError(f"{data_dir / 'train.parquet'}: domain {code} has fewer than 2 items")
            stats[code] = (domain_rows.mean(0), domain_rows.std(0).clamp_min(1e-6))
        encoders = Encoders(features.shape[1], config.dim, config.hidden, stats, generator)
        head = CosFaceHead(config.dim, classes, generator, scale=config.scale, margin=config.margin)
        parameters = list(encoders.parameters()) + list(head.parameters())
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(groups) / config.batch_products)
        total_steps = config.epochs * steps_per_epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
        labels_t = torch.from_numpy(labels.astype(np.int64))
        domains_t = torch.from_numpy(domain_index.astype(np.int64))

        bar = _Progress(total_steps, config.loss, stream, progress)
        epoch_losses = []
        started = time.perf_counter()
        encoders.train()
        for epoch in range(1, config.epochs + 1):
            running, seen = 0.0, 0
            for batch in _batches(rng, groups, config.batch_products, config.items_per_domain):
                rows = np.sort(batch)  # this batch's item rows
                index = torch.from_numpy(rows)
                batch_domains = domains_t[index]
                batch_labels = labels_t[index]
                loss_cls = torch.zeros(())
                parts = []
                for d, code in enumerate(DOMAINS):
                    mask = batch_domains == d
                    if not bool(mask.any()):
                        continue
                    emb = encoders(features[index[mask]], code)
                    loss_cls = loss_cls + head(emb, batch_labels[mask], code)
                    parts.append((mask, emb))
                loss = loss_cls / len(rows)
                if config.loss == "cls+cd":
                    embeddings = torch.cat([emb for _, emb in parts])
                    order = torch.cat([torch.nonzero(mask).flatten() for mask, _ in parts])
                    loss = loss + config.cd_weight * cross_domain_infonce(
                        embeddings, batch_labels[order], batch_domains[order], config.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                value = float(loss.detach())
                running, seen = running + value, seen + 1
                bar.update(epoch, config.epochs, running / seen)
            epoch_losses.append(running / seen)
        bar.close()
        seconds = time.perf_counter() - started

        encoders.eval()
        test_features = torch.from_numpy(test_split["features"])
        out = np.zeros((len(test_features), config.dim), dtype=np.float32)
        with torch.no_grad():
            for code in DOMAINS:
                mask = test_split["domain"] == code
                if mask.any():
                    out[mask] = encoders(test_features[torch.from_numpy(mask)], code).numpy()
    return TrainResult(config=config, item_ids=test_split["item_id"], domains=test_split["domain"],
                       embeddings=out, epoch_losses=tuple(epoch_losses), seconds=seconds)
