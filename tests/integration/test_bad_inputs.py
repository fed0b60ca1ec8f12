"""Bad inputs to the real ``spendpred`` command: one ``error:`` line, exit 2, no secret, nothing created.

Every case runs the installed console script (``spendpred.cli:main``) in a subprocess and
asserts: exit status 2; exactly one stderr line starting with ``error:``, and it is the last
one; no ``Traceback``; the password ``s3cr3t-pw`` of the URLs nowhere in the output; and no
file created or changed under the test's folder: the warehouse, staging, the MLflow store
(``SPENDPRED_HOME`` is in the test's folder, so a registry created or written, a version
registered, shows as a new file) and the working folder. The one exception is a failed
validation, whose error line names its report: the report (and the snapshot it describes) may
be written, in that folder only. PostgreSQL cases are marked ``postgres`` and use the
session's throwaway database.

The tasks of the DAGs fail through the same error path (``spendpred.failures.one_line``): see
``tests/unit/test_errors.py`` and ``tests/e2e/test_dags_e2e.py``.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from spendpred import errors, failures, masking, warehouse
from spendpred.errors import ConfigError

SECRET = "s3cr3t-pw"
AS_OF = "2024-06-01"
SPENDPRED = shutil.which("spendpred", path=str(Path(sys.executable).parent)) or "spendpred"


@dataclass(frozen=True)
class Case:
    """One bad input: ``args`` and ``env`` may name ``{W}`` (a seeded SQLite warehouse), ``{MISSING}``
    (a SQLite URL whose file does not exist), ``{PG}`` (the PostgreSQL test database, no driver),
    ``{PGDB}`` (its name), ``{TMP}`` (the test's folder, holding ``a-file`` and an empty folder
    ``a-folder``), ``{PORT}`` (a closed local port), ``{RO}`` (a folder nobody may write in),
    ``{SRC}`` (a SQLite warehouse without constraints holding ``bad_row``), ``{NOTABLES}`` (an
    existing SQLite file without the tables), ``{SNAP}`` (a copy of a real snapshot, spoiled by
    ``spoil``); ``expect`` is a piece of the error line. ``leaves_report``: a failed validation
    whose report (named in the error line) may be written."""

    id: str
    args: tuple[str, ...]
    expect: str
    env: dict[str, str] = field(default_factory=dict)
    postgres: bool = False
    bad_row: tuple[str, tuple[object, ...]] | None = None
    spoil: str | None = None
    leaves_report: bool = False


TRAIN_ON_SRC = ("train", "--as-of", "2024-09-28", "--horizon", "90", "--url", "{SRC}")
"""Retraining whose features are as of 2024-06-30, the date the rows of ``{SRC}`` are laid out around."""
MLFLOW_DOWN = f"http://bob:{SECRET}@127.0.0.1:{{PORT}}"


CASES = [
    # -- arguments, checked before anything is read or written
    Case("as-of-not-a-date", ("score", "--as-of", "2024-13-01", "--url", "{W}"), "as_of='2024-13-01' is not a date"),
    Case("as-of-a-word", ("train", "--as-of", "yesterday", "--url", "{W}"), "as_of='yesterday' is not a date"),
    Case("as-of-missing", ("score", "--url", "{W}"), "Missing option '--as-of'"),
    Case("shards-zero", ("score", "--as-of", AS_OF, "--shards", "0", "--url", "{W}"), "shards=0 is out of range"),
    Case("shards-too-many", ("score", "--as-of", AS_OF, "--shards", "65", "--url", "{W}"), "shards=65 is out of range"),
    Case("shards-not-a-number", ("score", "--as-of", AS_OF, "--shards", "abc", "--url", "{W}"), "Invalid value for '--shards'"),
    Case("model-unknown-alias", ("score", "--as-of", AS_OF, "--model", "latest", "--url", "{W}"), "model='latest' is not valid"),
    Case("model-version-zero", ("score", "--as-of", AS_OF, "--model", "0", "--url", "{W}"), "model='0' is not valid"),
    Case("promote-bogus", ("train", "--as-of", AS_OF, "--promote", "bogus", "--url", "{W}"), "promote='bogus' is not valid"),
    Case("loss-unknown", ("train", "--as-of", AS_OF, "--loss", "bogus", "--url", "{W}"), "loss='bogus' is not valid"),
    Case("epochs-zero", ("train", "--as-of", AS_OF, "--epochs", "0", "--url", "{W}"), "epochs=0 is out of range"),
    Case("freeze-bogus", ("train", "--as-of", AS_OF, "--freeze", "bogus", "--url", "{W}"), "freeze='bogus' is not valid"),
    Case("unknown-option", ("score", "--as-of", AS_OF, "--bogus", "--url", "{W}"), "No such option: --bogus"),
    Case("extract-out-is-a-file", ("extract", "--as-of", AS_OF, "--out", "{TMP}/a-file", "--url", "{W}"), "a-file"),
    Case("extract-out-empty", ("extract", "--as-of", AS_OF, "--out", "", "--url", "{W}"), "the output folder is empty"),
    Case("seed-users-absurd", ("seed", "--users", "99999999999999", "--url", "{W}"), "users must be between 1 and 50,000,000"),
    # -- settings
    Case("horizon-days-zero", ("summary", "--url", "{W}"), "SPENDPRED_HORIZON_DAYS=0 is out of range: use a whole number in 1..",
         env={"SPENDPRED_HORIZON_DAYS": "0"}),  # fmt: skip
    Case("chunk-rows-zero", ("score", "--as-of", AS_OF, "--url", "{W}"), "SPENDPRED_CHUNK_ROWS=0 is out of range: use a whole number >= 1",
         env={"SPENDPRED_CHUNK_ROWS": "0"}),  # fmt: skip
    Case("chunk-rows-a-word", ("summary", "--url", "{W}"), "SPENDPRED_CHUNK_ROWS=many is not valid", env={"SPENDPRED_CHUNK_ROWS": "many"}),
    Case("loss-setting-unknown", ("summary", "--url", "{W}"), "SPENDPRED_LOSS: unsupported loss 'bogus'", env={"SPENDPRED_LOSS": "bogus"}),
    Case("train-windows-too-many", ("summary", "--url", "{W}"), "SPENDPRED_TRAIN_WINDOWS=13 is out of range",
         env={"SPENDPRED_TRAIN_WINDOWS": "13"}),  # fmt: skip
    # -- warehouse URLs (the password must never show)
    Case("scheme-unsupported-url-option", ("summary", "--url", f"mysql://bob:{SECRET}@db.example:3306/w"),
         "unsupported warehouse backend 'mysql' in mysql://bob:***@db.example:3306/w"),  # fmt: skip
    Case("scheme-unsupported-setting", ("summary",), "SPENDPRED_WAREHOUSE_URL: unsupported warehouse URL mysql://bob:***@",
         env={"SPENDPRED_WAREHOUSE_URL": f"mysql://bob:{SECRET}@db.example:3306/w"}),  # fmt: skip
    Case("scheme-typo-with-password", ("summary", "--url", f"postgress://bob:{SECRET}@db.example/w"), "unsupported warehouse backend"),
    Case("url-unparsable-port", ("summary", "--url", f"postgresql://bob:{SECRET}@127.0.0.1:notaport/w"), "invalid warehouse URL"),
    Case("pg-wrong-port", ("summary", "--url", f"postgres://postgres:{SECRET}@127.0.0.1:1/test"),
         "cannot connect to the warehouse postgresql+psycopg2://postgres:***@127.0.0.1:1/test"),  # fmt: skip
    Case("pg-wrong-port-setting", ("score", "--as-of", AS_OF, "--dry-run"), "cannot connect to the warehouse",
         env={"SPENDPRED_WAREHOUSE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:1/test"}),  # fmt: skip
    Case("pg-wrong-database", ("summary", "--url", f"postgres://postgres:{SECRET}@{{PGHOST}}/spendpred_no_such_db"),
         'database "spendpred_no_such_db" does not exist: fix the database name', postgres=True),  # fmt: skip
    Case("pg-wrong-user", ("summary", "--url", f"postgresql://spendpred_no_such_user:{SECRET}@{{PGHOST}}/{{PGDB}}"),
         'role "spendpred_no_such_user" does not exist: fix the user name', postgres=True),  # fmt: skip
    Case("pg-tables-missing", ("summary", "--url", "{PG}"), "error from the warehouse", postgres=True),
    # -- a mistyped SQLite path creates nothing
    Case("sqlite-missing-score", ("score", "--as-of", AS_OF, "--url", "{MISSING}"), "does not exist: run `spendpred db init`"),
    Case("sqlite-missing-train", ("train", "--as-of", AS_OF, "--url", "{MISSING}"), "does not exist: run `spendpred db init`"),
    Case("sqlite-missing-extract", ("extract", "--as-of", AS_OF, "--out", "{TMP}/snap", "--url", "{MISSING}"), "does not exist"),
    Case("sqlite-missing-summary", ("summary", "--url", "{MISSING}"), "does not exist: run `spendpred db init`"),
    Case("sqlite-missing-setting", ("score", "--as-of", AS_OF), "does not exist: run `spendpred db init`",
         env={"SPENDPRED_WAREHOUSE_URL": "{MISSING}"}),  # fmt: skip
    Case("sqlite-missing-grant", ("db", "grant-readonly", "reader", "--url", "{MISSING}"), "does not exist"),
    Case("extract-no-tables", ("extract", "--as-of", AS_OF, "--out", "{TMP}/snapshot", "--url", "{NOTABLES}"),
         "no such table"),  # fmt: skip
    Case("sqlite-no-tables-train", ("train", "--as-of", AS_OF, "--url", "{NOTABLES}"),
         "no such table: users: run `spendpred db init`"),  # fmt: skip
    Case("pg-tables-missing-score", ("score", "--as-of", AS_OF, "--url", "{PG}"),
         'relation "users" does not exist: run `spendpred db init`', postgres=True),  # fmt: skip
    Case("pg-tables-missing-train", ("train", "--as-of", AS_OF, "--url", "{PG}"),
         'relation "users" does not exist: run `spendpred db init`', postgres=True),  # fmt: skip
    # -- more settings
    Case("torch-threads-zero", ("summary", "--url", "{W}"), "SPENDPRED_TORCH_THREADS=0 is out of range",
         env={"SPENDPRED_TORCH_THREADS": "0"}),  # fmt: skip
    Case("concurrent-tasks-a-word", ("score", "--as-of", AS_OF, "--url", "{W}"), "SPENDPRED_CONCURRENT_TASKS=two is not valid",
         env={"SPENDPRED_CONCURRENT_TASKS": "two"}),  # fmt: skip
    Case("staging-unknown-scheme", ("score", "--as-of", AS_OF, "--url", "{W}"),
         "staging on hdfs:// is not supported: use a folder, a file:// URL or object storage (s3://bucket/prefix",
         env={"SPENDPRED_STAGING_DIR": "hdfs://namenode/staging"}),  # fmt: skip
    Case("staging-on-s3-unreachable", ("score", "--as-of", AS_OF, "--url", "{W}"),
         "cannot be reached (When initiating multiple part upload",
         env={"SPENDPRED_STAGING_DIR": "s3://bucket/staging", "AWS_ENDPOINT_URL": "http://127.0.0.1:{PORT}",
              "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}),  # fmt: skip
    # -- staging that cannot be written
    Case("staging-under-a-file", ("score", "--as-of", AS_OF, "--dry-run", "--url", "{W}"), "Not a directory",
         env={"SPENDPRED_STAGING_DIR": "{TMP}/a-file/staging"}),  # fmt: skip
    Case("staging-is-a-file", ("score", "--as-of", AS_OF, "--url", "{W}"), "cannot use {TMP}/a-file/score: Not a directory",
         env={"SPENDPRED_STAGING_DIR": "{TMP}/a-file"}),  # fmt: skip
    Case("staging-is-a-file-train", ("train", "--as-of", AS_OF, "--url", "{W}"), "cannot use {TMP}/a-file/train: Not a directory",
         env={"SPENDPRED_STAGING_DIR": "{TMP}/a-file"}),  # fmt: skip
    Case("staging-read-only-score", ("score", "--as-of", AS_OF, "--url", "{W}"), "cannot use {RO}/staging: ",
         env={"SPENDPRED_STAGING_DIR": "{RO}/staging"}),  # fmt: skip
    Case("staging-read-only-train", ("train", "--as-of", AS_OF, "--url", "{W}"), "cannot use {RO}/staging: ",
         env={"SPENDPRED_STAGING_DIR": "{RO}/staging"}),  # fmt: skip
    Case("extract-out-read-only", ("extract", "--as-of", AS_OF, "--out", "{RO}/snapshot", "--url", "{W}"),
         "cannot use {RO}/snapshot: "),  # fmt: skip
    # -- MLflow: unreachable, unwritable, nothing registered
    Case("mlflow-unreachable-score", ("score", "--as-of", AS_OF, "--url", "{W}"),
         "cannot reach the MLflow registry at http://bob:***@127.0.0.1:{PORT}: connection refused",
         env={"SPENDPRED_MLFLOW_TRACKING_URI": MLFLOW_DOWN}),  # fmt: skip
    Case("mlflow-unreachable-train", ("train", "--as-of", AS_OF, "--url", "{W}"),
         "cannot reach the MLflow registry at http://bob:***@127.0.0.1:{PORT}: connection refused",
         env={"SPENDPRED_MLFLOW_TRACKING_URI": MLFLOW_DOWN}),  # fmt: skip
    Case("mlflow-database-unreachable-train", ("train", "--as-of", AS_OF, "--url", "{W}"),
         "cannot reach the MLflow registry at postgresql://bob:***@127.0.0.1:{PORT}/mlflow",
         env={"SPENDPRED_MLFLOW_TRACKING_URI": f"postgresql://bob:{SECRET}@127.0.0.1:{{PORT}}/mlflow"}),  # fmt: skip
    Case("mlflow-store-unwritable-train", ("train", "--as-of", AS_OF, "--url", "{W}"), "the MLflow store sqlite:///{RO}/mlflow/mlflow.db cannot be written",
         env={"SPENDPRED_MLFLOW_TRACKING_URI": "sqlite:///{RO}/mlflow/mlflow.db"}),  # fmt: skip
    Case("mlflow-store-under-a-file-train", ("train", "--as-of", AS_OF, "--url", "{W}"), "cannot be written: a file is in the way",
         env={"SPENDPRED_MLFLOW_TRACKING_URI": "sqlite:///{TMP}/a-file/mlflow.db"}),  # fmt: skip
    Case("mlflow-store-is-a-folder-score", ("score", "--as-of", AS_OF, "--url", "{W}"), "is a folder, not a SQLite file",
         env={"SPENDPRED_MLFLOW_TRACKING_URI": "sqlite:///{TMP}/a-folder"}),  # fmt: skip
    Case("mlflow-artifacts-unwritable-train", ("train", "--as-of", AS_OF, "--url", "{W}"), "the MLflow artifact root {RO}/artifacts cannot be written",
         env={"SPENDPRED_MLFLOW_ARTIFACT_ROOT": "{RO}/artifacts"}),  # fmt: skip
    Case("no-champion-yet", ("score", "--as-of", AS_OF, "--url", "{W}"), "no champion yet: run `spendpred train"),
    Case("model-version-missing", ("score", "--as-of", AS_OF, "--model", "7", "--dry-run", "--url", "{W}"),
         "spendpred-regressor version 7 does not exist"),  # fmt: skip
    # -- source rows that break the contract: the gate refuses them before anything trains
    Case("source-negative-amount", TRAIN_ON_SRC, "order_amount_negative", leaves_report=True,
         bad_row=("orders", ("bad1", "u1", "2024-06-05 10:00:00", -5.0, 1, "completed"))),  # fmt: skip
    Case("source-infinite-amount", TRAIN_ON_SRC, "order_amount_not_finite", leaves_report=True,
         bad_row=("orders", ("bad1", "u1", "2024-06-05 10:00:00", math.inf, 1, "completed"))),  # fmt: skip
    Case("source-orphan-order", TRAIN_ON_SRC, "order_user_unknown", leaves_report=True,
         bad_row=("orders", ("bad1", "ghost", "2024-06-05 10:00:00", 3.0, 1, "completed"))),  # fmt: skip
    Case("source-unknown-event-type", TRAIN_ON_SRC, "event_type_unknown", leaves_report=True,
         bad_row=("events", ("u1", "2024-06-05 10:00:00", "purchase"))),  # fmt: skip
    Case("source-duplicate-user", TRAIN_ON_SRC, "user_id_not_unique", leaves_report=True,
         bad_row=("users", ("u2", "2024-03-02 10:00:00"))),  # fmt: skip
    Case("source-dated-in-the-future", TRAIN_ON_SRC, "timestamp_in_future", leaves_report=True,
         bad_row=("orders", ("bad1", "u1", "2999-12-31 10:00:00", 3.0, 1, "completed"))),  # fmt: skip
    # -- snapshot files
    Case("validate-missing-folder", ("validate", "{TMP}/no-such-snapshot"), "snapshot folder {TMP}/no-such-snapshot does not exist"),
    Case("validate-not-a-snapshot", ("validate", "{TMP}/a-folder"), "no manifest.json in {TMP}/a-folder", leaves_report=True),
    Case("validate-truncated-parquet", ("validate", "{SNAP}"), "Parquet magic bytes not found", spoil="truncate", leaves_report=True),
    Case("validate-manifest-not-json", ("validate", "{SNAP}"), "manifest.json is not valid JSON", spoil="manifest", leaves_report=True),
    # -- checked where they are read, before anything is extracted or replaced (issue 22, item 4)
    Case("max-users-too-few", ("train", "--as-of", AS_OF, "--max-users", "10", "--url", "{W}"),
         "max_users=10 is out of range: use a whole number >= 100"),  # fmt: skip
    Case("freeze-more-layers-than-the-encoder", ("train", "--as-of", AS_OF, "--freeze", "bottom-k:99", "--url", "{W}"),
         "freeze=bottom-k:99 asks for more layers than the encoder has (6"),  # fmt: skip
    Case("encoder-folder-missing", ("train", "--as-of", AS_OF, "--url", "{W}"), "encoder folder {TMP}/no-encoder does not exist",
         env={"SPENDPRED_ENCODER_DIR": "{TMP}/no-encoder"}),  # fmt: skip
    Case("encoder-folder-empty", ("train", "--as-of", AS_OF, "--url", "{W}"), "encoder folder {TMP}/a-folder has no config.json",
         env={"SPENDPRED_ENCODER_DIR": "{TMP}/a-folder"}),  # fmt: skip
    Case("tier-shares-above-one", ("score", "--as-of", AS_OF, "--url", "{W}"),
         "the SPENDPRED_TIER_* settings hold an invalid tier rule: tier rule fields 'high' + 'medium' = 1.4 exceed 1",
         env={"SPENDPRED_TIER_HIGH": "0.9", "SPENDPRED_TIER_MEDIUM": "0.5"}),  # fmt: skip
    Case("tier-threshold-without-bounds", ("score", "--as-of", AS_OF, "--url", "{W}"),
         "invalid tier rule: tier rule field 'high_min' is required with mode='threshold'",
         env={"SPENDPRED_TIER_MODE": "threshold"}),  # fmt: skip
    Case("seed-end-date-in-the-future", ("seed", "--users", "10", "--end-date", "2999-12-31", "--url", "{W}"),
         "end_date 2999-12-31 is in the future"),  # fmt: skip
    Case("append-day-in-the-future", ("seed", "--append-day", "2999-12-31", "--url", "{W}"), "day 2999-12-31 is in the future"),
]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small seeded SQLite warehouse shared by the module's cases (they never write to it)."""
    folder = tmp_path_factory.mktemp("seeded")
    url = f"sqlite:///{folder / 'warehouse.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDPRED_")} | {"SPENDPRED_HOME": str(folder / "var")}
    for args in (["db", "init"], ["seed", "--users", "60", "--days", "200", "--end-date", "2024-06-30"]):
        subprocess.run([SPENDPRED, *args, "--url", url], env=env, cwd=folder, capture_output=True, check=True, timeout=300)
    return url


@pytest.fixture(scope="module")
def snapshot(seeded: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real snapshot of the seeded warehouse, copied and spoiled by the snapshot cases."""
    folder = tmp_path_factory.mktemp("snapshot")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDPRED_")} | {"SPENDPRED_HOME": str(folder / "var")}
    args = ["extract", "--as-of", "2024-06-30", "--out", str(folder / "snapshot"), "--url", seeded]
    subprocess.run([SPENDPRED, *args], env=env, cwd=folder, capture_output=True, check=True, timeout=300)
    return folder / "snapshot"


_PERMISSIVE_SOURCES = (
    "CREATE TABLE users (user_id TEXT, signup_at TEXT, country TEXT, segment TEXT)",
    "CREATE TABLE orders (order_id TEXT, user_id TEXT, ordered_at TEXT, amount REAL, items INTEGER, category TEXT, status TEXT)",
    "CREATE TABLE events (user_id TEXT, occurred_at TEXT, event_type TEXT, category TEXT, query TEXT, price REAL)",
    "CREATE TABLE reviews (user_id TEXT, created_at TEXT, rating INTEGER, body TEXT)",
)
"""Source relations as a real warehouse's views may expose them: no constraint stops a bad row."""
_CLEAN_ROWS: dict[str, list[tuple[object, ...]]] = {
    "users": [("u1", "2024-01-01 09:00:00"), ("u2", "2024-03-01 10:00:00"), ("u3", "2024-05-01 10:00:00")],
    "orders": [
        ("o1", "u1", "2024-06-01 10:00:00", 40.0, 2, "completed"),
        ("o2", "u1", "2024-06-20 10:00:00", 25.5, 1, "completed"),
        ("o3", "u2", "2024-06-15 10:00:00", 12.0, 1, "completed"),
        ("o4", "u2", "2024-07-10 10:00:00", 18.0, 1, "completed"),
    ],
    "events": [("u1", "2024-06-25 10:00:00", "view"), ("u2", "2024-06-29 10:00:00", "search"), ("u3", "2024-06-30 10:00:00", "click")],
    "reviews": [("u1", "2024-06-10 09:00:00", 5), ("u2", "2024-06-12 09:00:00", 3)],
}
_COLUMNS = {
    "users": "user_id, signup_at",
    "orders": "order_id, user_id, ordered_at, amount, items, status",
    "events": "user_id, occurred_at, event_type",
    "reviews": "user_id, created_at, rating",
}


def _sqlite_file(path: Path, ddl: tuple[str, ...] = (), rows: dict[str, list[tuple[object, ...]]] | None = None) -> str:
    """A SQLite file in WAL mode (as spendpred opens it, so reading it changes no byte) with ``ddl`` and ``rows``."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in ddl or ("CREATE TABLE unrelated (x INTEGER)",):
            conn.execute(statement)
        for table, values in (rows or {}).items():
            marks = ", ".join("?" for _ in _COLUMNS[table].split(","))
            conn.executemany(f"INSERT INTO {table} ({_COLUMNS[table]}) VALUES ({marks})", values)
        conn.commit()
    finally:
        conn.close()
    return f"sqlite:///{path}"


def _source_warehouse(path: Path, bad_row: tuple[str, tuple[object, ...]]) -> str:
    table, row = bad_row
    rows = {name: list(values) for name, values in _CLEAN_ROWS.items()}
    rows[table].append(row)
    return _sqlite_file(path, _PERMISSIVE_SOURCES, rows)


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder where nothing can be created: read-only bits, or (for root, who ignores them) sysfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").mkdir()
    except OSError:
        return folder
    (folder / "probe").rmdir()
    folder.chmod(0o755)
    folder.rmdir()
    sysfs = Path("/sys/fs")
    try:
        (sysfs / "spendpred-probe").mkdir()
    except OSError:
        return sysfs
    (sysfs / "spendpred-probe").rmdir()
    pytest.skip("no folder refuses writes here (root, and /sys/fs is writable)")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _report_folder(line: str) -> Path:
    """The snapshot folder whose validation report the error line names (``full report: <dir>/validation.md``)."""
    match = re.search(r"full report: (\S+)/validation\.md", line)
    assert match, line
    return Path(match.group(1))


def _files(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and modification time."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                stat = path.stat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def run(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``spendpred`` console script in ``tmp`` with the test's settings plus ``env``."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([SPENDPRED, *args], env=full, cwd=tmp, capture_output=True, text=True, timeout=120, check=False)


def assert_one_error_line(done: subprocess.CompletedProcess[str], expect: str) -> str:
    """Exit 2, exactly one ``error:`` line (the last line of stderr), no traceback, no secret."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors_ = [line for line in lines if line.startswith("error:")]
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(errors_) == 1 and lines[-1] == errors_[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert SECRET not in done.stderr and SECRET not in done.stdout
    assert expect in errors_[0], errors_[0]
    return errors_[0]


def _pg_placeholders(request: pytest.FixtureRequest) -> dict[str, str]:
    url = sa.engine.make_url(request.getfixturevalue("pg_url"))
    return {
        "{PG}": url.set(drivername="postgres").render_as_string(hide_password=False),
        "{PGHOST}": f"{url.host or '127.0.0.1'}:{url.port or 5432}",
        "{PGDB}": url.database or "",
    }


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.postgres] if c.postgres else []) for c in CASES]
)
def test_bad_input_is_one_line_and_changes_nothing(
    case: Case, seeded: str, tmp_path: Path, isolated_settings: Path, request: pytest.FixtureRequest
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "a-folder").mkdir()
    missing = tmp_path / "typo" / "warehouse.db"
    values = {"{W}": seeded, "{MISSING}": f"sqlite:///{missing}", "{TMP}": str(tmp_path), "{PORT}": str(_closed_port())}
    text = " ".join([*case.args, *case.env.values(), case.expect])
    if "{RO}" in text:
        values["{RO}"] = str(_read_only_folder(tmp_path))
    if case.bad_row is not None:
        values["{SRC}"] = _source_warehouse(tmp_path / "source.db", case.bad_row)
    if "{NOTABLES}" in text:
        values["{NOTABLES}"] = _sqlite_file(tmp_path / "no-tables.db")
    if case.spoil is not None:
        spoiled = shutil.copytree(request.getfixturevalue("snapshot"), tmp_path / "snapshot")
        if case.spoil == "truncate":
            with open(spoiled / "snapshot.parquet", "r+b") as handle:
                handle.truncate(100)
        else:
            (spoiled / "manifest.json").write_text("{not json")
        values["{SNAP}"] = str(spoiled)
    if case.postgres:
        values |= _pg_placeholders(request)

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    seeded_dir = Path(sa.engine.make_url(seeded).database or "").parent
    before = _files(tmp_path, seeded_dir)
    done = run([fill(a) for a in case.args], tmp_path, {k: fill(v) for k, v in case.env.items()})
    line = assert_one_error_line(done, fill(case.expect))
    after = _files(tmp_path, seeded_dir)
    if case.leaves_report:  # a failed validation: its report, and the snapshot it describes, in the folder named
        folder = _report_folder(line)
        written = {Path(p) for p in set(after) ^ set(before)} | {Path(p) for p in after if p in before and after[p] != before[p]}
        assert {p.parent for p in written} <= {folder}, sorted(map(str, written))
        assert {p.name for p in written} <= {"snapshot.parquet", "manifest.json", "validation.json", "validation.md"}
        assert (folder / "validation.md").is_file() and "FAILED" in (folder / "validation.md").read_text()
    else:
        assert after == before, sorted(set(after) ^ set(before))
    assert not missing.parent.exists()
    assert not (isolated_settings / "mlflow.db").exists()  # no registry created, hence no version registered


# -- PostgreSQL roles ------------------------------------------------------------------------------


@pytest.fixture
def pg_warehouse(pg_url: str) -> Iterator[sa.Engine]:
    engine = warehouse.get_engine(pg_url)
    warehouse.init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def role(pg_warehouse: sa.Engine) -> Iterator[str]:
    """A LOGIN role (password ``s3cr3t-pw``) for this test, dropped at the end (roles are cluster-wide)."""
    name = f"spendpred_test_role_{uuid.uuid4().hex[:8]}"
    with pg_warehouse.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{SECRET}'")
    yield name
    with pg_warehouse.begin() as conn:
        conn.exec_driver_sql(f'REASSIGN OWNED BY "{name}" TO CURRENT_USER')
        conn.exec_driver_sql(f'DROP OWNED BY "{name}"')
        conn.exec_driver_sql(f'DROP ROLE "{name}"')


def _rights(engine: sa.Engine) -> list[tuple[object, ...]]:
    """Every role's rights on schema spendpred and its relations, and their owners (to see that nothing changed)."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT 'schema', nspname, nspowner::regrole::text, COALESCE(nspacl::text, '') FROM pg_namespace "
                "WHERE nspname = 'spendpred' UNION ALL "
                "SELECT 'relation', c.relname, c.relowner::regrole::text, COALESCE(c.relacl::text, '') FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'spendpred' ORDER BY 1, 2"
            )
        ]


def _pg(pg_url: str) -> str:
    return sa.engine.make_url(pg_url).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_grant_readonly_refuses_the_connected_owner_role(pg_warehouse: sa.Engine, pg_url: str, tmp_path: Path) -> None:
    owner = pg_warehouse.url.username or "postgres"
    before = _rights(pg_warehouse)
    line = assert_one_error_line(run(["db", "grant-readonly", owner, "--url", _pg(pg_url)], tmp_path), "nothing changed")
    assert owner in line
    assert _rights(pg_warehouse) == before


@pytest.mark.postgres
def test_grant_readonly_refuses_a_role_owning_the_schema(pg_warehouse: sa.Engine, pg_url: str, role: str, tmp_path: Path) -> None:
    with pg_warehouse.begin() as conn:
        conn.exec_driver_sql(f'ALTER SCHEMA spendpred OWNER TO "{role}"')
        conn.exec_driver_sql(f'ALTER TABLE spendpred.user_spend_scores OWNER TO "{role}"')
    before = _rights(pg_warehouse)
    line = assert_one_error_line(run(["db", "grant-readonly", role, "--url", _pg(pg_url)], tmp_path), "owns the warehouse")
    assert role in line
    assert _rights(pg_warehouse) == before  # the owner keeps every right


@pytest.mark.postgres
def test_grant_readonly_refuses_a_member_of_a_writing_role(pg_warehouse: sa.Engine, pg_url: str, role: str, tmp_path: Path) -> None:
    writer = f"{role}_w"
    with pg_warehouse.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{writer}" NOLOGIN')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA spendpred TO "{writer}"')
        conn.exec_driver_sql(f'GRANT INSERT, DELETE ON spendpred.user_spend_scores TO "{writer}"')
        conn.exec_driver_sql(f'GRANT "{writer}" TO "{role}"')
    try:
        before = _rights(pg_warehouse)
        line = assert_one_error_line(run(["db", "grant-readonly", role, "--url", _pg(pg_url)], tmp_path), "can write the warehouse")
        assert "INSERT on spendpred.user_spend_scores" in line
        assert _rights(pg_warehouse) == before
    finally:
        with pg_warehouse.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{writer}"')
            conn.exec_driver_sql(f'DROP ROLE "{writer}"')


@pytest.mark.postgres
def test_read_only_role_running_a_write_command(pg_warehouse: sa.Engine, pg_url: str, role: str, tmp_path: Path) -> None:
    done = run(["db", "grant-readonly", role, "--url", _pg(pg_url)], tmp_path)
    assert done.returncode == 0, done.stderr
    as_reader = sa.engine.make_url(pg_url).set(drivername="postgres", username=role, password=SECRET)
    reader_url = as_reader.render_as_string(hide_password=False)
    before = _rights(pg_warehouse)
    for args in (["seed", "--users", "20", "--days", "30"], ["db", "init"]):
        line = assert_one_error_line(run([*args, "--url", reader_url], tmp_path), "permission denied")
        assert "postgresql+psycopg2://" not in line or ":***@" in line, line
    assert _rights(pg_warehouse) == before
    with pg_warehouse.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM users").scalar_one() == 0


# -- what is accepted ------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_url_without_driver_is_accepted(pg_url: str, scheme: str, tmp_path: Path) -> None:
    url = sa.engine.make_url(pg_url).set(drivername=scheme).render_as_string(hide_password=False)
    done = run(["db", "init", "--url", url], tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"url": "postgresql+psycopg2://' in done.stdout
    done = run(["summary"], tmp_path, {"SPENDPRED_WAREHOUSE_URL": url})
    assert done.returncode == 0, done.stderr


def test_creating_commands_still_create_a_new_sqlite_warehouse(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'warehouse.db'}"
    done = run(["db", "init", "--url", url], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "new" / "warehouse.db").is_file()
    assert run(["summary", "--url", url], tmp_path).returncode == 0


def test_a_failed_extract_stages_nothing_and_keeps_the_snapshot_there(warehouse_url: str, isolated_settings: Path) -> None:
    """Scoring on a warehouse without tables (SQLite or PostgreSQL): no run folder appears, and a
    snapshot staged (and validated) earlier for the date is left byte for byte."""
    from spendpred import pipeline

    day = dt.date(2024, 6, 30)
    staging = isolated_settings / "staging"
    with pytest.raises(errors.WarehouseError, match="no such table|does not exist"), failures.one_line(creates_warehouse=True):
        pipeline.extract_scoring_snapshot(day, url=warehouse_url)
    assert not staging.exists()

    earlier = staging / "score" / day.isoformat() / "snapshot"
    earlier.mkdir(parents=True)
    for name, text in (("snapshot.parquet", "validated bytes"), ("manifest.json", "{}"), ("validation.json", '{"success": true}')):
        (earlier / name).write_text(text)
    before = _files(staging)
    with pytest.raises(errors.WarehouseError), failures.one_line(creates_warehouse=True):
        pipeline.extract_scoring_snapshot(day, url=warehouse_url)
    assert _files(staging) == before
    assert sorted(p.name for p in earlier.parent.iterdir()) == ["snapshot"]  # no hidden temporary folder left


def test_get_engine_create_false_refuses_a_missing_file_and_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'w.db'}"
    with pytest.raises(ConfigError, match="does not exist: run `spendpred db init`"):
        warehouse.get_engine(url, create=False)
    with warehouse.existing_warehouse_only(), pytest.raises(ConfigError, match="does not exist"):
        warehouse.get_engine(url)
    assert not (tmp_path / "typo").exists()
    warehouse.get_engine(url).dispose()  # outside the guard, creating is allowed (the folder now)
    assert (tmp_path / "typo").is_dir()


def test_reading_an_empty_sqlite_file_leaves_it_empty(tmp_path: Path) -> None:
    """A zero-byte file (``touch warehouse.db``) is a warehouse without tables: commands that only
    read say so, and the file stays zero bytes; ``db init`` then makes it a warehouse."""
    empty = tmp_path / "warehouse.db"
    empty.touch()
    url = f"sqlite:///{empty}"
    done = run(["score", "--as-of", AS_OF, "--url", url], tmp_path)
    assert done.returncode == 2 and "run `spendpred db init`" in done.stderr, done.stderr
    assert run(["summary", "--url", url], tmp_path).returncode == 2
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("warehouse.db")) == ["warehouse.db"]
    assert run(["db", "init", "--url", url], tmp_path).returncode == 0
    assert empty.stat().st_size > 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:pw@h:5432/d", "postgresql+psycopg2://u:pw@h:5432/d"),
        ("postgresql://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_warehouse_url_forms(url: str, expected: str) -> None:
    assert warehouse.normalize_url(url) == expected


# -- the messages themselves -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"mysql://bob:{SECRET}@h/x",
        f"postgres://:{SECRET}@h",
        f"weird:://bob:{SECRET}@@h",
        f"postgresql://bob:p@{SECRET}@h/d",
        f"host=h password={SECRET} dbname=d",
    ],
)
def test_secrets_are_masked_even_in_unparsable_urls(text: str) -> None:
    assert SECRET not in masking.mask_secrets(text)
    assert SECRET not in masking.mask_url(text)


@pytest.mark.parametrize(
    ("error", "expect"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/staging/run"), "cannot use /staging/run: No space left on device: free"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"), "cannot use /mnt/ro: Read-only file system: the disk is read-only"),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/staging"), "cannot use /srv/staging: Permission denied"),
    ],
)
def test_file_system_failures_are_one_line_naming_the_path(error: OSError, expect: str) -> None:
    assert failures.describe(error) is not None and failures.describe(error).startswith(expect)  # type: ignore[union-attr]


def test_a_bug_is_not_hidden() -> None:
    assert failures.describe(KeyError("x")) is None


# -- source text that cannot be read (issue 22, item 2) ----------------------------------------------

PII_BODY = b"Call jane.doe@example.com or +1 555 0100 " + b"\xff\xfe broken"


def _unreadable_review_warehouse(path: Path) -> str:
    """The clean rows (3 users) plus one review of u1 whose body is not UTF-8 and quotes an e-mail address and a phone."""
    url = _sqlite_file(path, _PERMISSIVE_SOURCES, _CLEAN_ROWS)
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "INSERT INTO reviews (user_id, created_at, rating, body) VALUES ('u1', '2024-06-11 09:00:00', 2, CAST(? AS TEXT))",
            (PII_BODY,),
        )
        conn.commit()
    finally:
        conn.close()
    return url


def _no_pii(done: subprocess.CompletedProcess[str]) -> None:
    for piece in ("jane.doe@example.com", "555 0100", "broken", "Call "):
        assert piece not in done.stderr and piece not in done.stdout, piece


def test_an_unreadable_review_above_the_share_is_one_line_without_its_text(tmp_path: Path, isolated_settings: Path) -> None:
    url = _unreadable_review_warehouse(tmp_path / "source.db")
    before = _files(tmp_path)
    done = run(["extract", "--as-of", "2024-06-30", "--out", str(tmp_path / "snap"), "--url", url], tmp_path,
               {"SPENDPRED_MAX_UNREADABLE_SHARE": "0.01"})  # fmt: skip
    line = assert_one_error_line(done, "review of user u1 at 2024-06-11 09:00:00")
    assert "SPENDPRED_MAX_UNREADABLE_SHARE=0.01" in line
    _no_pii(done)
    assert _files(tmp_path) == before
    assert not (tmp_path / "snap").exists()


def test_an_unreadable_review_within_the_share_costs_only_its_text(tmp_path: Path) -> None:
    url = _unreadable_review_warehouse(tmp_path / "source.db")
    done = run(["extract", "--as-of", "2024-06-30", "--out", str(tmp_path / "snap"), "--url", url], tmp_path,
               {"SPENDPRED_MAX_UNREADABLE_SHARE": "0.5"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 source row(s) of 1 of 3 user(s)" in done.stderr and "review of user u1 at 2024-06-11 09:00:00" in done.stderr
    _no_pii(done)
    assert json.loads(done.stdout)["rows"] == 3


# -- imports, training sets and the report (issue 22, item 4) -------------------------------------


def _cdnow_file(path: Path, line: str) -> Path:
    path.write_text("customer_id date cds dollars\n00001 19970101 1 11.77\n" + line + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("00002 29991231 1 5.00", "line 3: date '29991231' is not a plausible purchase date (from 19700101 to "),
        ("00002 19691231 1 5.00", "line 3: date '19691231' is not a plausible purchase date"),
        ("x" * 10_000_000, "line 3: expected 4 whitespace-separated fields"),
        ("1" * 10_000_000 + " 19970101 1 2.00", "line 3: customer id '111"),
    ],
    ids=["dated-2999", "dated-1969", "a-10-MB-line", "a-10-MB-customer-id"],
)
def test_a_bad_cdnow_line_is_one_short_line_and_imports_nothing(tmp_path: Path, seeded: str, line: str, expect: str) -> None:
    cdnow = _cdnow_file(tmp_path / "CDNOW_master.txt", line)
    seeded_dir = Path(sa.engine.make_url(seeded).database or "").parent
    before = _files(tmp_path, seeded_dir)
    done = run(["import-cdnow", str(cdnow), "--url", seeded], tmp_path)
    error = assert_one_error_line(done, expect)
    assert len(error) < 500 and len(done.stderr) < 5_000, len(done.stderr)  # echoed input cut to an excerpt
    assert _files(tmp_path, seeded_dir) == before


def test_a_training_set_too_small_is_refused_before_anything_is_registered(tmp_path: Path, isolated_settings: Path) -> None:
    """Three users pass the source contract and the gate, but train nothing that means anything (this used
    to train and register a model on 5/2/3 users): refused before training, nothing trained or registered."""
    rows = {name: list(values) for name, values in _CLEAN_ROWS.items()}  # 40 users: every split holds a few
    rows["users"] += [(f"s{i:02d}", "2024-02-01 10:00:00") for i in range(37)]
    rows["orders"] += [(f"so{i:02d}", f"s{i:02d}", "2024-06-10 10:00:00", 10.0 + i, 1, "completed") for i in range(37)]
    url = _sqlite_file(tmp_path / "source.db", _PERMISSIVE_SOURCES, rows)
    done = run([a.replace("{SRC}", url) for a in TRAIN_ON_SRC], tmp_path)
    line = assert_one_error_line(done, "too few users to train a model that means anything")
    assert "nothing was trained or registered: train on more users" in line
    assert not (isolated_settings / "mlflow.db").exists()
    assert not list((isolated_settings / "staging").rglob("bundle.json"))


def test_report_with_a_missing_mlflow_store_beside_published_scores_exits_2(tmp_path: Path) -> None:
    """Scores published by version 1, but SPENDPRED_MLFLOW_TRACKING_URI names a store that does not exist
    (a typo, another SPENDPRED_HOME): not "champion: none yet" with exit 0 but one line naming the store."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert run(["db", "init", "--url", url], tmp_path).returncode == 0
    conn = sqlite3.connect(tmp_path / "warehouse.db")
    try:
        conn.execute(
            "INSERT INTO user_spend_scores (as_of, user_id, predicted_spend, tier, model_name, model_version, scored_at) "
            "VALUES ('2024-06-30', 'u1', 12.5, 'high', 'spendpred-regressor', '1', '2024-07-01 02:00:00')"
        )
        conn.commit()
    finally:
        conn.close()
    store = tmp_path / "typo" / "mlflow.db"
    before = _files(tmp_path)
    done = run(["report", "--url", url], tmp_path, {"SPENDPRED_MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    line = assert_one_error_line(done, f"the MLflow registry {store} does not exist, yet the warehouse holds scores of version 1")
    assert "SPENDPRED_MLFLOW_TRACKING_URI" in line and "champion: none yet" not in done.stdout
    assert _files(tmp_path) == before and not store.parent.exists()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert run(["db", "init", "--url", empty], tmp_path).returncode == 0
    fresh = run(["report", "--url", empty], tmp_path, {"SPENDPRED_MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    assert fresh.returncode == 0 and "champion: none yet" in fresh.stdout  # no scores yet: nothing registered is the truth
    assert not store.parent.exists()
