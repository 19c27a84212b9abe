"""Result objects of an evaluation, their JSON form (schema ``ropebench.results/1``) and the
per-query table; every file written here can be read back (:func:`load_results`).

The results JSON holds the protocol, the inputs' sha256, the environment (with the engine that
ran and its counters), timings and, per task, the counts and measures. The per-query table holds
one row per scored query and task: ``task item_id product_id domain [category] a t p censored``
and one column per measure, named like the aggregate (``R@1`` … ``MRR@50``) on the same percent
scale, so the mean of a column over a task's rows is the task's number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ropebench.errors import DataError
from ropebench.protocol import ALL_TASKS, CROSS_TASKS, DOMAINS, INTRA_TASKS, measure_names

__all__ = ["RESULTS_SCHEMA", "COUNT_KEYS", "TaskResult", "EvaluationResult", "load_results", "read_per_query",
           "PER_QUERY_METADATA_KEY"]

RESULTS_SCHEMA = "ropebench.results/1"
COUNT_KEYS: tuple[str, ...] = ("n_queries", "n_skipped", "n_gallery", "n_tied")
PER_QUERY_METADATA_KEY = b"ropebench"  # parquet schema metadata: protocol and provenance of a per-query file


@dataclass(frozen=True)
class TaskResult(Mapping[str, Any]):
    """Scores of one task. Behaves as the read-only mapping stored under ``tasks[TASK]`` in JSON.

    Attributes:
        task: task code, e.g. ``"P2V"``.
        n_queries: scored queries (those with at least one relevant gallery item).
        n_skipped: queries without a relevant gallery item (never scored).
        n_gallery: items of the gallery domain, before per-query exclusions.
        n_tied: scored queries whose R@K at some reported K differs between the optimistic
            and the pessimistic tie policy.
        measures: ``{"R@1": ..., "MRR@50": ...}``, percentages in [0, 100], unrounded; None
            when ``n_queries`` is 0.
        ci: ``{"R@1": (low, high), …}``, the 95% product-level bootstrap interval, or None.
    """

    task: str
    n_queries: int
    n_skipped: int
    n_gallery: int
    n_tied: int
    measures: Mapping[str, float | None]
    ci: Mapping[str, tuple[float, float] | None] | None = None

    @property
    def metrics(self) -> Mapping[str, float | None]:
        """Earlier name of :attr:`measures` (kept so existing code keeps working)."""
        return self.measures

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_queries": self.n_queries,
            "n_skipped": self.n_skipped,
            "n_gallery": self.n_gallery,
            "n_tied": self.n_tied,
            # None (JSON null) when no query could be scored: a mean over nothing is no number.
            **{name: None if value is None else float(value) for name, value in self.measures.items()},
        }
        if self.ci is not None:
            out["ci"] = {name: None if bounds is None else [float(bounds[0]), float(bounds[1])]
                         for name, bounds in self.ci.items()}
        return out

    @classmethod
    def from_json(cls, task: str, data: Mapping[str, Any]) -> TaskResult:
        measures = {key: (None if value is None else float(value)) for key, value in data.items()
                    if key not in COUNT_KEYS and key != "ci"}
        ci = data.get("ci")
        return cls(task=task, n_queries=int(data["n_queries"]), n_skipped=int(data["n_skipped"]),
                   n_gallery=int(data["n_gallery"]), n_tied=int(data["n_tied"]), measures=measures,
                   ci=None if ci is None else {k: (None if v is None else (float(v[0]), float(v[1])))
                                               for k, v in ci.items()})

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


@dataclass(frozen=True)
class EvaluationResult:
    """Everything one evaluation produced; ``to_json()`` is the results file.

    ``per_query`` is a pyarrow Table (see the module docstring), built on first access from the
    counts the engine computed anyway; it is not part of the JSON and is written by
    :meth:`write` (``--per-query``). A result read back with :func:`load_results` has it when
    its file recorded a per-query file.
    """

    ropebench_version: str
    created: str
    protocol: Mapping[str, Any]
    submission: Mapping[str, Any]
    manifest: Mapping[str, Any] | None
    environment: Mapping[str, Any]
    timing: Mapping[str, float]
    tasks: Mapping[str, TaskResult]
    # Where the per-query rows were written (path, sha256): a record of a file, not a number of the
    # result, so ``load_results(path) == result`` holds whether or not one was written.
    per_query_file: Mapping[str, Any] | None = field(default=None, compare=False)
    extra: Mapping[str, Any] = field(default_factory=dict)  # further top-level keys, kept on round trips
    _per_query: Any = field(default=None, repr=False, compare=False)  # a Table or a zero-argument builder
    _fewshot_per_query: Any = field(default=None, repr=False, compare=False)

    @property
    def fewshot(self) -> Mapping[str, Any] | None:
        """The ``fewshot`` section (docs/fewshot.md): ``{"protocol": …, "tasks": {"V2P": {"1-shot":
        {"acc": …, …}}}}``, or None when not evaluated with ``fewshot=True``."""
        value = self.extra.get("fewshot")
        return value if isinstance(value, Mapping) else None

    @property
    def fewshot_per_query(self) -> Any:
        """Few-shot per-query pyarrow Table (``task`` ``V2P/1-shot``, ``item_id`` … ``acc``, ``acc@5``,
        averaged over draws), or None (not evaluated with few-shot, or read back without its
        per-query file). The per-query file holds these rows after the retrieval rows."""
        value = self._fewshot_per_query
        if callable(value):
            value = value()
            object.__setattr__(self, "_fewshot_per_query", value)
        return value

    @property
    def per_query(self) -> Any:
        """The per-query pyarrow Table (None if this result has none)."""
        value = self._per_query
        if callable(value):
            value = value()
            object.__setattr__(self, "_per_query", value)  # a cache, not a change of the result
        return value

    @property
    def by_category(self) -> Mapping[str, Any] | None:
        """``{category: {task: {"n_queries": n, "R@1": …}}}`` when evaluated with ``by="category"``."""
        value = self.extra.get("by_category")
        return value if isinstance(value, Mapping) else None

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(int(k) for k in self.protocol["ks"])

    @property
    def measure_names(self) -> tuple[str, ...]:
        return measure_names(self.ks, self.protocol.get("measures"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": RESULTS_SCHEMA,
            "ropebench_version": self.ropebench_version,
            "created": self.created,
            "protocol": dict(self.protocol),
            "submission": dict(self.submission),
            "manifest": None if self.manifest is None else dict(self.manifest),
            "environment": dict(self.environment),
            "timing": dict(self.timing),
            "tasks": {task: result.to_json() for task, result in self.tasks.items()},
        }
        if self.per_query_file is not None:
            out["per_query"] = dict(self.per_query_file)
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, base: str | os.PathLike[str] | None = None) -> EvaluationResult:
        """The result a results JSON object describes. ``base``: the directory a per-query path
        is relative to (the results file's)."""
        problems = _schema_problems(data)
        if problems:
            schema = data.get("schema") if isinstance(data, Mapping) else None
            if isinstance(schema, str) and schema.startswith("ropebench.results/") and schema != RESULTS_SCHEMA:
                fix = (f"Fix: this file was written by another ropebench version (schema {schema}); this version "
                       f"reads {RESULTS_SCHEMA}: evaluate again with this version (`ropebench evaluate SUBMISSION "
                       "--out results.json`), or read it with the version that wrote it")
            else:
                fix = "Fix: pass a results file written by `ropebench evaluate --out`"
            raise DataError("not a ropebench results object:\n  - " + "\n  - ".join(problems) + "\n" + fix)
        known = {"schema", "ropebench_version", "created", "protocol", "submission", "manifest", "environment",
                 "timing", "tasks", "per_query"}
        per_query_file = data.get("per_query")
        builder = fewshot_builder = None
        if per_query_file is not None:
            path = Path(per_query_file["path"])
            if base is not None and not path.is_absolute():
                path = Path(base) / path
            builder, fewshot_builder = _lazy_readers(path, per_query_file.get("sha256"))
        return cls(
            ropebench_version=str(data["ropebench_version"]),
            created=str(data.get("created", "")),
            protocol=dict(data["protocol"]),
            submission=dict(data["submission"]),
            manifest=None if data.get("manifest") is None else dict(data["manifest"]),
            environment=dict(data.get("environment", {})),
            timing=dict(data.get("timing", {})),
            tasks={task: TaskResult.from_json(task, value) for task, value in data["tasks"].items()},
            per_query_file=None if per_query_file is None else dict(per_query_file),
            extra={key: value for key, value in data.items() if key not in known},
            _per_query=builder,
            _fewshot_per_query=fewshot_builder,
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write(self, out: str | os.PathLike[str] | None = None, *,
              per_query: str | os.PathLike[str] | None = None) -> EvaluationResult:
        """Write the results JSON and/or the per-query parquet file, together: both are written to
        temporary files and renamed at the end, so a failure leaves neither (see
        :func:`ropebench.io.files.write_together`). Returns the result as written (with the
        per-query file recorded in it when both are written)."""
        from ropebench.io.files import write_together

        return write_together(self, out=out, per_query=per_query)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write the results JSON atomically (temp file + rename)."""
        self.write(path)

    def matrix(self, measure: str = "R@1") -> dict[str, dict[str, float | None]]:
        """``{query_domain: {gallery_domain: value or None}}`` for the 3×3 domain matrix.

        Raises:
            UsageError: ``measure`` was not computed in this run (None would read as "no query").
        """
        computed = {name for task in self.tasks.values() for name in task.measures}
        if self.tasks and measure not in computed:
            from ropebench.errors import UsageError

            raise UsageError(f"measure {measure!r} was not computed in this run (it has "
                             f"{', '.join(self.measure_names) or 'none'}). Fix: choose one of those, or evaluate "
                             "again with its K in ks")
        return {
            q: {g: (self.tasks[f"{q}2{g}"].measures.get(measure) if f"{q}2{g}" in self.tasks else None)
                for g in DOMAINS}
            for q in DOMAINS
        }

    def summary(self) -> dict[str, float]:
        """A flat dict of floats for loggers: ``{"P2V/R@1": 67.79, …, "cross/R@1": …, "intra/R@1": …}``.

        ``cross`` and ``intra`` are unweighted means over the six cross-domain and the three
        intra-domain tasks, present when every task of the group was evaluated and scored.
        """
        out: dict[str, float] = {}
        for task in ALL_TASKS:
            if task in self.tasks:
                for name, value in self.tasks[task].measures.items():
                    if value is not None:
                        out[f"{task}/{name}"] = float(value)
        for group, tasks in (("cross", CROSS_TASKS), ("intra", INTRA_TASKS)):
            for name in self.measure_names:
                values = [out.get(f"{task}/{name}") for task in tasks]
                if all(v is not None for v in values):
                    out[f"{group}/{name}"] = sum(v for v in values if v is not None) / len(values)
        fewshot = self.fewshot
        if fewshot is not None:
            for direction, by_shots in fewshot.get("tasks", {}).items():
                for shots, cells in by_shots.items():
                    for name in ("acc", "acc_macro", "acc@5"):
                        if cells.get(name) is not None:
                            key = f"fewshot/{direction}/{shots}" + ("" if name == "acc" else f"/{name}")
                            out[key] = float(cells[name])
        return out

    def __repr__(self) -> str:
        rows = []
        for q in DOMAINS:
            cells = []
            for g in DOMAINS:
                value = self.matrix("R@1")[q][g]
                cells.append("   –  " if value is None else f"{value:6.2f}")
            rows.append(f"  {q} " + " ".join(cells))
        return ("<EvaluationResult " + f"{self.protocol.get('metric')}, ties {self.protocol.get('ties')}, "
                f"{len(self.tasks)} tasks; R@1 query × gallery (P V L):\n" + "\n".join(rows) + ">")


def _schema_problems(data: Any) -> list[str]:
    if not isinstance(data, Mapping):
        return ["the top level is not a JSON object"]
    problems = []
    if data.get("schema") != RESULTS_SCHEMA:
        problems.append(f"'schema' is {data.get('schema')!r}, expected {RESULTS_SCHEMA!r}")
    for key in ("ropebench_version", "protocol", "submission", "tasks"):
        if key not in data:
            problems.append(f"'{key}' is missing")
    tasks = data.get("tasks")
    if isinstance(tasks, Mapping):
        for task, value in tasks.items():
            if task not in ALL_TASKS:
                problems.append(f"tasks.{task}: not a task ({', '.join(ALL_TASKS)})")
            elif not isinstance(value, Mapping) or any(key not in value for key in COUNT_KEYS):
                problems.append(f"tasks.{task}: needs {', '.join(COUNT_KEYS)} and the measures")
    elif "tasks" in data:
        problems.append("'tasks' is not an object")
    protocol = data.get("protocol")
    if isinstance(protocol, Mapping) and not isinstance(protocol.get("ks"), list):
        problems.append("protocol.ks is missing or not a list")
    return problems


def _lazy_readers(path: Path, sha256: str | None) -> tuple[Any, Any]:
    """Builders of the retrieval and the few-shot per-query tables, sharing one read of the file."""
    read: dict[str, Any] = {}

    def both() -> tuple[Any, Any]:
        if "tables" not in read:
            from ropebench.io.per_query import split_table

            read["tables"] = split_table(read_per_query(path, sha256=sha256))
        return read["tables"]

    return (lambda: both()[0]), (lambda: both()[1])


def read_per_query(path: str | os.PathLike[str], *, sha256: str | None = None) -> Any:
    """Read a per-query parquet file (a pyarrow Table), checking its sha256 when given."""
    from ropebench.io.files import sha256_file
    from ropebench.io.parquet import read_parquet
    from ropebench.io.safety import regular_input

    path = Path(path)
    if not os.path.lexists(path):
        raise DataError(f"per-query file {path}: no such file. Fix: keep the per-query file next to its "
                        "results file, or re-run `ropebench evaluate … --out R.json` (it writes R.per_query.parquet)")
    regular_input(path, "per-query file", fix="put the per-query parquet file itself there, or evaluate again")
    if sha256 is not None and sha256_file(path) != sha256:
        raise DataError(f"per-query file {path}: its sha256 differs from the one its results file records. "
                        "Fix: re-run the evaluation; the file was changed after it was written")
    return read_parquet(path)


def load_results(path: str | os.PathLike[str]) -> EvaluationResult:
    """Read a results file written by ``ropebench evaluate --out`` (or :meth:`EvaluationResult.write`).

    Returns the same result object that was written (equal to it); its ``per_query`` is read
    lazily from the per-query file the results file records, if any.

    Raises:
        DataError: the file is missing, not JSON, or not a ``ropebench.results/1`` object.
    """
    from ropebench.io.safety import regular_input

    path = Path(path)
    if os.path.lexists(path):  # a pipe would block read_text, a link to /dev/zero never end it
        regular_input(path, "results file", fix="pass a results JSON file written by `ropebench evaluate --out`")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"results file {path}: no such file. Fix: check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"results file {path}: cannot be read ({error}). Fix: pass a results JSON file") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise DataError(f"results file {path}: not valid JSON ({error}). Fix: pass the file `ropebench "
                        "evaluate --out` wrote") from None
    try:
        return EvaluationResult.from_json(data, base=path.parent)
    except DataError as error:
        raise DataError(f"results file {path}: {error}") from None
