"""Entry metadata: what the model is and what it was trained on (``leaderboard add --metadata``).

Both objects are optional; every field in them is optional too, and unknown fields are refused::

    {"model": {"name": "COPE ViT-B/16", "parameters": 86000000, "embedding_dim": 256,
               "embedding_dtype": "float32", "bytes_per_item": 1024},
     "training_data": {"rope_train": true, "other": "LAION-400M pre-training", "zero_shot": false}}

``model.bytes_per_item``, ``embedding_dim`` and ``embedding_dtype`` are filled from the results
when not given: the compression's (``protocol.compression``) or the submission's ``dim`` and dtype.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ropebench.errors import DataError

__all__ = ["METADATA_KEYS", "metadata_problems", "read_metadata", "filled_model", "describe", "describe_model",
           "effective_model", "training_text"]

METADATA_KEYS = ("model", "training_data")
_MODEL = {"name": str, "parameters": int, "embedding_dim": int, "embedding_dtype": str, "bytes_per_item": int}
_TRAINING = {"rope_train": bool, "other": str, "zero_shot": bool}
_DTYPES = ("float64", "float32", "float16", "bfloat16", "int8", "uint8", "binary")


def _field_problems(value: Any, where: str, fields: Mapping[str, type]) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{where!r} must be an object with some of: {', '.join(fields)}"]
    problems = [f"{where}.{key} is not a known field (known: {', '.join(fields)})" for key in value
                if key not in fields]
    for key, kind in fields.items():
        if key not in value or value[key] is None:
            continue
        item = value[key]
        if kind is int and not (isinstance(item, int) and not isinstance(item, bool) and item > 0):
            problems.append(f"{where}.{key} is {item!r}: must be a positive integer")
        elif kind is bool and not isinstance(item, bool):
            problems.append(f"{where}.{key} is {item!r}: must be true or false")
        elif kind is str and (not isinstance(item, str) or not item.strip() or "\n" in item or len(item) > 500):
            problems.append(f"{where}.{key} is {item!r}: must be one line of text (at most 500 characters)")
    return problems


def metadata_problems(data: Mapping[str, Any]) -> list[str]:
    """All problems of the ``model`` and ``training_data`` objects of an entry (or a metadata file)."""
    problems = []
    model, training = data.get("model"), data.get("training_data")
    if "model" in data:
        problems += _field_problems(model, "model", _MODEL)
        if isinstance(model, Mapping) and isinstance(model.get("embedding_dtype"), str) \
                and model["embedding_dtype"] not in _DTYPES:
            problems.append(f"model.embedding_dtype is {model['embedding_dtype']!r}: one of {', '.join(_DTYPES)}")
    if "training_data" in data:
        problems += _field_problems(training, "training_data", _TRAINING)
        if isinstance(training, Mapping) and training.get("zero_shot") is True and training.get("rope_train") is True:
            problems.append("training_data: zero_shot and rope_train are both true; a model trained on ROPE's "
                            "train split is not zero-shot")
    return problems


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A metadata file: ``{"model": {…}, "training_data": {…}}`` (either may be absent), checked.

    Raises:
        DataError: unreadable, not JSON, or every problem found (fields, types, contradictions).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"--metadata {path}: cannot be read as JSON ({error}). Fix: write an object such as "
                        '{"model": {"name": "…", "parameters": 86000000}, "training_data": {"zero_shot": true}}') \
            from None
    if not isinstance(data, dict):
        raise DataError(f"--metadata {path}: must be a JSON object with 'model' and/or 'training_data'")
    problems = [f"{key!r} is not a metadata field (give 'model' and/or 'training_data')" for key in data
                if key not in METADATA_KEYS]
    problems += metadata_problems(data)
    if problems:
        raise DataError(f"--metadata {path}: {len(problems)} problem(s), nothing written:\n  - "
                        + "\n  - ".join(problems))
    return data


def filled_model(model: Mapping[str, Any] | None, results: Mapping[str, Any]) -> dict[str, Any]:
    """``model`` with ``bytes_per_item``, ``embedding_dim`` and ``embedding_dtype`` taken from the
    results when not given (the compression's representation for a compressed result)."""
    from ropebench.compress import bytes_per_item, parse_compression

    out = dict(model or {})
    protocol = results.get("protocol") or {}
    submission = results.get("submission") or {}
    compression = parse_compression(protocol.get("compression")) if protocol.get("compression") else None
    dim = submission.get("dim")
    if compression is not None and compression.kind == "dims":
        dim = compression.dims
    dtype = submission.get("dtype")
    if compression is not None and compression.kind != "dims":
        dtype = {"fp16": "float16", "int8": "int8", "binary": "binary"}[compression.kind]
    elif compression is not None:
        dtype = "float32"
    found = bytes_per_item(results)
    for key, value in (("embedding_dim", dim), ("embedding_dtype", dtype), ("bytes_per_item", found)):
        if out.get(key) is None and value is not None:
            out[key] = value
    return out


def effective_model(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's ``model`` with what its own records tell filled in (an entry added before
    ``--metadata`` existed still has its submission's dim and dtype, hence its bytes per item)."""
    model = entry.get("model") if isinstance(entry.get("model"), Mapping) else None
    return filled_model(model, entry) if entry.get("kind") == "computed" else dict(model or {})


def training_text(entry: Mapping[str, Any]) -> str:
    """``zero-shot``, ``ROPE train``, ``ROPE train + other`` … or ``–`` when unknown."""
    training = entry.get("training_data")
    if not isinstance(training, Mapping):
        return "–"
    parts = []
    if training.get("zero_shot"):
        parts.append("zero-shot")
    if training.get("rope_train"):
        parts.append("ROPE train")
    if training.get("other"):
        parts.append(str(training["other"]))
    return " + ".join(parts) or "–"


def _parameters(count: Any) -> str:
    if not isinstance(count, int):
        return ""
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)


def describe(entry: Mapping[str, Any]) -> str:
    """One line about an entry's model, size, storage and training (the tables' metadata column)."""
    parts = [text for text in (describe_model(entry), training_text(entry)) if text != "–"]
    return "; ".join(parts) or "–"


def describe_model(entry: Mapping[str, Any]) -> str:
    """The model part of :func:`describe`: name (parameters); d and dtype; bytes per item; compression."""
    model = effective_model(entry)
    protocol: Mapping[str, Any] = entry["protocol"] if isinstance(entry.get("protocol"), Mapping) else {}
    parts = []
    if model.get("name"):
        parts.append(str(model["name"]) + (f" ({_parameters(model.get('parameters'))})"
                                           if model.get("parameters") else ""))
    elif model.get("parameters"):
        parts.append(f"{_parameters(model['parameters'])} parameters")
    if model.get("embedding_dim"):
        parts.append(f"d={model['embedding_dim']} {model.get('embedding_dtype', '')}".rstrip())
    if model.get("bytes_per_item"):
        parts.append(f"{model['bytes_per_item']} B/item")
    if protocol.get("compression"):
        parts.append(f"compressed {protocol['compression']}")
    return "; ".join(parts) or "–"
