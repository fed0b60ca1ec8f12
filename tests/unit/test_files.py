"""Atomic writes, checksums and JSON reads shared by every stage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from spendpred.errors import ConfigError
from spendpred.files import read_json, sha256_file, write_json_atomic, write_text_atomic


def test_atomic_writes_replace_whole_files_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "result.json"
    write_json_atomic(target, {"b": 1, "a": {"when": tmp_path}})
    assert json.loads(target.read_text()) == {"a": {"when": str(tmp_path)}, "b": 1}
    assert target.read_text().startswith('{\n  "a"')  # sorted keys, indented
    write_text_atomic(target, "replaced\n")
    assert target.read_text() == "replaced\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_sha256_and_read_json(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"spend" * 100_000)
    assert sha256_file(path, block=1000) == hashlib.sha256(b"spend" * 100_000).hexdigest()
    with pytest.raises(ConfigError, match="training result not found at .*: run the step that writes it first"):
        read_json(tmp_path / "missing.json", "training result")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        read_json(tmp_path / "bad.json", "tiers result")
