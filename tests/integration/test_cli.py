"""The ``spendpred`` command line (``spendpred.cli``): commands print JSON, every failure is one line.

In-process through the console-script entry point ``cli.main`` (as ``spendpred`` runs it), on
real SQLite warehouses in the test's temp folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spendpred import cli, warehouse
from spendpred.failures import describe
from tests.integration.test_seed import END
from tests.integration.test_synth_days import _active_users
from tests.pipeline_run import RUN_DATE


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, isolated_settings: Path) -> Path:
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    return isolated_settings


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``spendpred ARGS`` in-process; return ``(exit status, stdout, stderr)``."""
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["spendpred", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_db_init_seed_and_summary_print_what_they_did(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(monkeypatch, capsys, "db", "init", "--url", sqlite_url)
    assert code == 0 and any(name.startswith("schema/") for name in json.loads(out)["applied"])
    code, out, err = _run(monkeypatch, capsys, "seed", "--users", "60", "--days", "30", "--end-date", "2024-03-31",
                          "--seed", "4", "--url", sqlite_url)  # fmt: skip
    assert code == 0, err
    with warehouse.opened_engine(sqlite_url) as engine:
        counts = warehouse.table_counts(engine)
    assert json.loads(out) == counts and counts["users"] == 60
    code, out, _ = _run(monkeypatch, capsys, "summary", "--url", sqlite_url)
    summary = json.loads(out)
    assert code == 0 and summary["counts"] == counts and summary["last_order"] <= "2024-03-31 23:59:59"


def test_a_mistyped_warehouse_file_is_one_error_line_and_never_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "warehuose.db"
    for args in (["summary"], ["extract", "--as-of", "2024-03-31", "--out", str(tmp_path / "out")], ["monitor"],
                 ["score", "--as-of", "2024-03-31"], ["report"], ["report", "--json"]):  # fmt: skip
        code, out, err = _run(monkeypatch, capsys, *args, "--url", f"sqlite:///{typo}")
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2, (args, err)
        assert lines == [f"error: warehouse file {typo} does not exist: run `spendpred db init` (or fix "
                         "SPENDPRED_WAREHOUSE_URL or --url)"], err  # fmt: skip
        assert "Traceback" not in err and out == ""
    assert not typo.exists() and not (tmp_path / "out").exists()


def test_usage_errors_and_bad_values_stop_with_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(monkeypatch, capsys, "score", "--bogus")
    assert code == 2 and err.strip() == "error: No such option: --bogus (see `spendpred score --help`)"
    code, _, err = _run(monkeypatch, capsys, "db", "init", "--url", "mysql+nodriver://user:hunter2@host/db")
    assert code == 2 and err.startswith("error: ") and "hunter2" not in err and len(err.strip().splitlines()) == 1
    code, out, _ = _run(monkeypatch, capsys)  # no command: the help text
    assert "Usage: spendpred" in out and "seed" in out and "train" in out


def test_cli_reports_bad_input_in_one_line(env: Path, sqlite_url: str) -> None:
    for args, message in (
        (["score", "--as-of", "2024-13-01"], "as_of='2024-13-01' is not a date: use YYYY-MM-DD"),
        (["score", "--as-of", RUN_DATE.isoformat(), "--model", "latest"], "use 'champion', 'challenger' or a version number"),
        (["train", "--as-of", RUN_DATE.isoformat(), "--horizon-days", "0"], "horizon=0 is out of range: use a whole number in 1..3650"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "spendpred.cli", *args, "--url", sqlite_url], capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr


def test_report_command_exits_1_when_part_of_it_cannot_be_read(sqlite_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A scripted ``spendpred report`` sees the failure in its exit status, not only in the text."""
    from typer.testing import CliRunner

    from spendpred.cli import app

    monkeypatch.setenv("SPENDPRED_HOME", str(tmp_path / "var"))
    with warehouse.opened_engine(sqlite_url) as engine, engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")  # another database, not initialised
        conn.commit()
    for args in ([], ["--json"]):
        done = CliRunner().invoke(app, ["report", "--url", sqlite_url, *args])
        assert done.exit_code == 1, done.output
        assert "spendpred db init" in done.stdout
    with warehouse.opened_engine(sqlite_url) as engine:
        warehouse.init_db(engine)
    done = CliRunner().invoke(app, ["report", "--url", sqlite_url])
    assert done.exit_code == 0, done.output
    assert "error:" not in done.stdout


def test_seed_command_daily_active_and_append_day(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from spendpred.cli import app

    runner = CliRunner()
    seeded = runner.invoke(app, ["seed", "--users", "500", "--days", "90", "--end-date", "2024-12-31",
                                 "--daily-active", "0.1", "--seed", "3", "--url", sqlite_url])  # fmt: skip
    assert seeded.exit_code == 0, seeded.output
    engine = warehouse.get_engine(sqlite_url)
    assert json.loads(seeded.stdout) == warehouse.table_counts(engine)
    last = _active_users(engine, END) / 500
    assert 0.05 < last < 0.2  # about 10%, a Tuesday
    appended = runner.invoke(app, ["seed", "--append-day", "2025-01-01", "--new-users", "4", "--url", sqlite_url])
    assert appended.exit_code == 0, appended.output
    out = json.loads(appended.stdout)
    assert out["day"] == "2025-01-01" and out["users"] == 4 and out["signed_up"] == 504
    for args, message in (
        (["--append-day", "2025-01-02", "--users", "5"], "--users does not apply with --append-day"),
        (["--new-users", "3"], "--new-users applies only with --append-day"),
        (["--append-day", "2025-01-01"], "already holds rows dated 2025-01-01"),
    ):
        refused = runner.invoke(app, ["seed", *args, "--url", sqlite_url])
        assert refused.exit_code != 0 and message in describe(refused.exception), refused.output
    assert warehouse.table_counts(engine)["users"] == 504
