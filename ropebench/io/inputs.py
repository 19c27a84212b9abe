"""What a results file records about its inputs (paths and sha256 of files, or of the arrays)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ropebench.io.files import sha256_file

__all__ = ["input_record"]


def input_record(submission: Any, manifest: Any, dataset: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What a results file records about its inputs: paths, sha256, item count, d and dtype."""
    if submission is not None:
        record: dict[str, Any] = {"path": str(submission), "sha256": sha256_file(submission)}
        manifest_record = None if manifest is None else {"path": str(manifest), "sha256": sha256_file(manifest)}
    elif getattr(dataset, "resident", None) is not None:
        record = {"path": None, "sha256": dataset.resident.digest()}  # streamed from the device
        manifest_record = None
    else:
        matrix = np.ascontiguousarray(dataset.embeddings)
        # Its bytes as one flat uint8 view (a memoryview cast refuses an empty matrix's zero extent).
        digest = hashlib.sha256(matrix.reshape(-1).view(np.uint8).data).hexdigest()
        record = {"path": None, "sha256": digest}
        manifest_record = None
    record.update(n_items=dataset.n_items, dim=dataset.dim, dtype=dataset.dtype)
    return record, manifest_record
