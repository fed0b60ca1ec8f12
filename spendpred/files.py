"""Small file helpers shared by every stage: checksums, atomic writes, JSON reads, streamed Parquet.

A staged file is replaced in one ``os.replace`` of a hidden temporary sibling, so a reader
(or a retried task) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from spendpred.errors import ConfigError


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Return the hex SHA-256 of the file at ``path``, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def open_parquet(path: Path | str) -> Any:
    """Open a Parquet file for reading batch by batch (``pyarrow.parquet.ParquetFile``), without pre-buffering.

    pyarrow's default ``pre_buffer=True`` reads the column chunks of every row group that
    ``iter_batches`` will visit before the first batch comes back, so a streamed read held
    the whole file in memory (a 1.5 GB embedding cache at 1M users). Without it, memory
    stays at about one row group whatever the file's size.
    """
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False)


def temporary_sibling(path: Path) -> Path:
    """Return the hidden temporary name (``.<name>.tmp``) a file is written under before it replaces ``path``."""
    return path.with_name(f".{path.name}.tmp")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating the folder; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json_atomic(path: Path, data: Any, *, sort_keys: bool = True) -> Path:
    """Write ``data`` as indented JSON (non-JSON values as ``str``) atomically; return ``path``."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path: Path, what: str) -> Any:
    """Return the JSON content of ``path``.

    Raises ``ConfigError`` naming ``what`` and the step to run when the file is missing or
    not valid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found at {path}: run the step that writes it first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what} at {path} is not valid JSON ({exc}): run the step that writes it again") from exc
