"""Bad inputs to the real ``spendpred`` command: one ``error:`` line, exit 2, no secret, nothing created.

Every case runs the installed console script (``spendpred.cli:main``) in a subprocess and
asserts: exit status 2; exactly one stderr line starting with ``error:``, and it is the last
one; no ``Traceback``; the password ``s3cr3t-pw`` of the URLs nowhere in the output; and no
file created or changed under the test's folder (the warehouse, staging, the working folder).
PostgreSQL cases are marked ``postgres`` and use the session's throwaway database.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from spendpred import errors, warehouse
from spendpred.errors import ConfigError

SECRET = "s3cr3t-pw"
AS_OF = "2024-06-01"
SPENDPRED = shutil.which("spendpred", path=str(Path(sys.executable).parent)) or "spendpred"


@dataclass(frozen=True)
class Case:
    """One bad input: ``args`` and ``env`` may name ``{W}`` (a seeded SQLite warehouse), ``{MISSING}``
    (a SQLite URL whose file does not exist), ``{PG}`` (the PostgreSQL test database, no driver),
    ``{PGDB}`` (its name), ``{TMP}`` (the test's folder); ``expect`` is a piece of the error line."""

    id: str
    args: tuple[str, ...]
    expect: str
    env: dict[str, str] = field(default_factory=dict)
    postgres: bool = False


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
    # -- staging where a file is in the way
    Case("staging-under-a-file", ("score", "--as-of", AS_OF, "--dry-run", "--url", "{W}"), "Not a directory",
         env={"SPENDPRED_STAGING_DIR": "{TMP}/a-file/staging"}),  # fmt: skip
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
    missing = tmp_path / "typo" / "warehouse.db"
    values = {"{W}": seeded, "{MISSING}": f"sqlite:///{missing}", "{TMP}": str(tmp_path)}
    if case.postgres:
        values |= _pg_placeholders(request)

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    seeded_dir = Path(sa.engine.make_url(seeded).database or "").parent
    before = _files(tmp_path, seeded_dir)
    done = run([fill(a) for a in case.args], tmp_path, {k: fill(v) for k, v in case.env.items()})
    assert_one_error_line(done, fill(case.expect))
    after = _files(tmp_path, seeded_dir)
    assert after == before, sorted(set(after) ^ set(before))
    assert not missing.parent.exists()


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


def test_get_engine_create_false_refuses_a_missing_file_and_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'w.db'}"
    with pytest.raises(ConfigError, match="does not exist: run `spendpred db init`"):
        warehouse.get_engine(url, create=False)
    with warehouse.existing_warehouse_only(), pytest.raises(ConfigError, match="does not exist"):
        warehouse.get_engine(url)
    assert not (tmp_path / "typo").exists()
    warehouse.get_engine(url).dispose()  # outside the guard, creating is allowed (the folder now)
    assert (tmp_path / "typo").is_dir()


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
    assert SECRET not in errors.mask_secrets(text)
    assert SECRET not in errors.mask_url(text)


@pytest.mark.parametrize(
    ("error", "expect"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/staging/run"), "cannot use /staging/run: No space left on device: free"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"), "cannot use /mnt/ro: Read-only file system: the disk is read-only"),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/staging"), "cannot use /srv/staging: Permission denied"),
    ],
)
def test_file_system_failures_are_one_line_naming_the_path(error: OSError, expect: str) -> None:
    assert errors.describe(error) is not None and errors.describe(error).startswith(expect)  # type: ignore[union-attr]


def test_a_bug_is_not_hidden() -> None:
    assert errors.describe(KeyError("x")) is None
