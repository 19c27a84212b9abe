"""Checks of option values and option pairs, made before a command reads any data.

One place for what every command needs: an option that only means something with another
(``--nprobe`` without ``--index``) is refused rather than silently ignored, and values that
would hang or exhaust the machine (a closed scheduler port, 100,000 local workers, ``nan`` as a
size) fail at once with a message that names the option and the fix.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Sequence

import click

from ropebench.errors import UsageError

__all__ = ["given", "refuse_without", "check_distractor_sizes", "check_scheduler", "max_local_workers",
           "check_workers", "SCHEDULER_PROBE_SECONDS", "MAX_DISTRACTOR_SIZES"]

SCHEDULER_PROBE_SECONDS = 5.0
MAX_DISTRACTOR_SIZES = 100
_SCHEDULER = re.compile(r"(?:(?P<scheme>[a-z][a-z0-9+]*)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)"
                        r"(?::(?P<port>[0-9]{1,5}))?/?\Z")
_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def given(name: str) -> bool:
    """True when the option ``name`` (its Python name) was given on the command line or by the
    environment, not left at its default."""
    context = click.get_current_context(silent=True)
    if context is None:
        return False
    source = context.get_parameter_source(name)
    return source is not None and source not in (click.core.ParameterSource.DEFAULT,
                                                 click.core.ParameterSource.DEFAULT_MAP)


def refuse_without(pairs: Sequence[tuple[str, str, str, bool, str]]) -> None:
    """Refuse options given without their companion, all problems at once.

    Args:
        pairs: ``(option, python name, companion, companion present, fix)``, e.g.
            ``("--nprobe", "nprobe", "--index", index is not None, "add --index IVF…,Flat or drop --nprobe")``.
    """
    problems = [f"{option} only applies with {companion}, which was not given (it would be ignored). Fix: {fix}"
                for option, name, companion, present, fix in pairs if given(name) and not present]
    if problems:
        raise UsageError("refused before any work:\n  - " + "\n  - ".join(problems))


def check_distractor_sizes(text: str | None) -> None:
    """Every item of ``--distractor-sizes`` is ``all`` or a finite, whole, non-negative count."""
    if text is None:
        return
    bad = []
    for item in text.split(","):
        word = item.strip().lower()
        if word == "all":
            continue
        try:
            value = float(word)
        except ValueError:
            bad.append(item)
            continue
        if not math.isfinite(value) or value < 0 or value != int(value):
            bad.append(item)
    sizes = {item.strip().lower() for item in text.split(",")}
    if not bad and len(sizes) > MAX_DISTRACTOR_SIZES:
        raise UsageError(f"--distractor-sizes: {len(sizes):,} sizes; at most {MAX_DISTRACTOR_SIZES} (each is a point "
                         "of the curve, evaluated for every task and measure). Fix: e.g. --distractor-sizes "
                         "0,1e4,1e5,1e6,all")
    if bad or not text.strip():
        raise UsageError(f"--distractor-sizes {text!r}: {', '.join(repr(b) for b in bad) or 'nothing'} is not an item "
                         "count (whole, finite, at least 0). Fix: e.g. --distractor-sizes 0,100000,1e6,all")


def max_local_workers() -> int:
    """The most local Dask workers allowed: 4 per CPU core (more processes than that only add
    memory and start-up time: each worker is a Python process of its own)."""
    return 4 * (os.cpu_count() or 1)


def check_workers(workers: int | None) -> None:
    limit = max_local_workers()
    if workers is not None and workers > limit:
        raise UsageError(f"--workers {workers}: a local cluster of more than {limit} worker processes (4 per core on "
                         f"this machine with {os.cpu_count()} cores) would only exhaust memory. Fix: use --workers "
                         f"{min(limit, 2 * (os.cpu_count() or 1))} or less, or --scheduler ADDRESS for a real cluster")


def check_scheduler(address: str | None, *, probe_seconds: float | None = None) -> None:
    """A well-formed scheduler address, and for tcp/tls one that accepts a connection within
    ``probe_seconds`` (Dask itself would wait a minute before failing). Over plain tcp a Dask
    scheduler also speaks first (its handshake arrives at once); a port that accepts and stays
    silent (a web server, another service) is not one, and Dask would wait a minute on it too."""
    if address is None:
        return
    probe_seconds = SCHEDULER_PROBE_SECONDS if probe_seconds is None else probe_seconds
    match = _SCHEDULER.match(address.strip())
    scheme = (match["scheme"] or "tcp") if match else None
    if match is None or scheme not in _SCHEMES:
        raise UsageError(f"--scheduler {address!r}: not a scheduler address. Fix: give one like tcp://HOST:8786 "
                         f"(schemes: {', '.join(_SCHEMES)})")
    if scheme not in ("tcp", "tls"):
        return
    host, port = match["host"].strip("[]"), int(match["port"] or 8786)
    if not 0 < port < 65536:
        raise UsageError(f"--scheduler {address!r}: port {port} is not a port number (1–65535). Fix: e.g. "
                         "tcp://HOST:8786")
    try:
        with socket.create_connection((host, port), timeout=probe_seconds) as connection:
            greeting = b""
            if scheme == "tcp":
                connection.settimeout(probe_seconds)
                try:
                    greeting = connection.recv(64)
                except TimeoutError:
                    greeting = b""
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise UsageError(f"--scheduler {address}: cannot reach a scheduler at {host}:{port} ({reason}, waited at most "
                         f"{probe_seconds:g} s); nothing was evaluated. Fix: start one (`dask scheduler`) or check "
                         "the address, or drop --scheduler for a local cluster") from None
    if scheme == "tcp" and not greeting:
        raise UsageError(f"--scheduler {address}: something listens at {host}:{port} but it is not a Dask scheduler "
                         f"(it sent no handshake within {probe_seconds:g} s); nothing was evaluated. Fix: give the "
                         "scheduler's address (`dask scheduler` prints it), or drop --scheduler for a local cluster")
