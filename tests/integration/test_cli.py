"""The ``spendpred`` command line (``spendpred.cli``): commands print JSON, every failure is one line.

In-process through the console-script entry point ``cli.main`` (as ``spendpred`` runs it), on
real SQLite warehouses in the test's temp folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spendpred import cli, warehouse


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
                 ["score", "--as-of", "2024-03-31"]):  # fmt: skip
        code, out, err = _run(monkeypatch, capsys, *args, "--url", f"sqlite:///{typo}")
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2, (args, err)
        assert lines == [f"error: warehouse file {typo} does not exist: run `spendpred db init` (or fix "
                         "SPENDPRED_WAREHOUSE_URL or --url)"], err  # fmt: skip
        assert "Traceback" not in err and out == ""
    code, out, _ = _run(monkeypatch, capsys, "report", "--url", f"sqlite:///{typo}")  # the read side reports "nothing yet"
    assert code == 0 and "no scores published yet" in out
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
