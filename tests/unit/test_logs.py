"""Task logs carry spendpred's messages, not library progress bars or import-time filler.

Airflow records a task's stderr at level ERROR, so anything a library writes there makes a
successful task look broken. Each check runs in a fresh interpreter with stderr piped (as
in a task), INFO logging on, and asserts that stderr holds none of the known filler.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spendpred.logs import NOISY_LOGGERS, quiet_libraries
from tests.tiny_bert import make_tiny_bert

FILLER = ("Skipping registering function", "Loading weights", "Downloading artifacts", "it/s]", "%|")


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        env.pop(name, None)
    prelude = "import logging, sys\nlogging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False
    )


@pytest.mark.slow
def test_great_expectations_import_is_quiet_after_quiet_libraries(tmp_path: Path) -> None:
    noisy = _run("import great_expectations", tmp_path)
    assert "Skipping registering function" in noisy.stderr  # the filler exists without the fix
    quiet = _run("from spendpred.logs import quiet_libraries\nquiet_libraries()\nimport great_expectations", tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "Skipping registering function" not in quiet.stderr


@pytest.mark.slow
def test_loading_an_encoder_writes_no_progress_bar(tmp_path: Path) -> None:
    encoder = make_tiny_bert(tmp_path / "tiny")
    noisy = _run(f"from transformers import AutoModel\nAutoModel.from_pretrained({str(encoder)!r}, local_files_only=True)", tmp_path)
    assert "Loading weights" in noisy.stderr  # transformers' bar exists without the fix
    result = _run(f"from spendpred.model.network import load_encoder\nload_encoder({str(encoder)!r})\nprint('ok')", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    for filler in FILLER:
        assert filler not in result.stderr, (filler, result.stderr[-2000:])


def test_quiet_libraries_lowers_library_loggers_and_disables_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    quiet_libraries(force=False)  # a terminal: bars stay
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    assert all(logging.getLogger(name).level == logging.WARNING for name in NOISY_LOGGERS)
    quiet_libraries(force=True)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_mlflow_output_goes_through_logging_at_info(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """What MLflow prints (eprint) and logs reaches Python logging at INFO, never stderr (ERROR in Airflow)."""
    import logging

    from mlflow.utils.logging_utils import eprint

    from spendpred.logs import route_mlflow_output

    route_mlflow_output()
    route_mlflow_output()  # idempotent
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        eprint("Created version '2' of model 'spendpred-regressor'.")
        logging.getLogger("mlflow.tracking.fluent").info("a message of MLflow's own logger")
    assert capfd.readouterr().err == ""
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("mlflow", logging.INFO, "Created version '2' of model 'spendpred-regressor'.") in records
    assert ("mlflow.tracking.fluent", logging.INFO, "a message of MLflow's own logger") in records
    # MLflow's own stderr handler is gone and records propagate. pytest 9 also hangs its capture handlers on every logger
    # that did not propagate when the test began (MLflow's, when an earlier test imported MLflow): those are not ours
    mlflow_logger = logging.getLogger("mlflow")
    assert not [h for h in mlflow_logger.handlers if type(h).__name__ != "LogCaptureHandler"] and mlflow_logger.propagate


AIRFLOW_WARNINGS = ("Could not import graphviz", "GitWildMatchPattern ('gitwildmatch') is deprecated")


@pytest.mark.slow
def test_airflow_processes_filter_the_two_library_warnings_and_keep_others(tmp_path: Path) -> None:
    """Issue 22: the demo's logs carried graphviz's and pathspec's warnings. With the logging configuration that
    scripts/airflow-env.sh selects, Airflow (which imports it while it starts) drops exactly those two."""
    repo = Path(__file__).resolve().parents[2]
    code = (
        "import warnings\nfrom pathlib import Path\nimport airflow.settings\n"
        "import airflow.cli.commands.dag_command\n"  # warns at import when graphviz is missing
        "from airflow._shared.module_loading.file_discovery import _GlobIgnoreRule\n"
        f"_GlobIgnoreRule.compile('x.py', Path({str(tmp_path)!r}), Path({str(tmp_path / '.airflowignore')!r}))\n"
        "warnings.warn('another warning stays', UserWarning)\n"
    )
    base = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "PYTHONWARNINGS"}
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                           env={**env, **base}, cwd=tmp_path)  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert all(w in plain.stdout + plain.stderr for w in AIRFLOW_WARNINGS)  # both exist without the configuration
    configured = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
        env={**env, **base, "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS": "spendpred_logging.LOGGING_CONFIG"},
    )  # fmt: skip
    assert configured.returncode == 0, configured.stderr[-2000:]
    out = configured.stdout + configured.stderr
    assert not [w for w in AIRFLOW_WARNINGS if w in out], out[-2000:]
    assert "another warning stays" in out
    script = (repo / "scripts" / "airflow-env.sh").read_text()
    assert "AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS:-spendpred_logging.LOGGING_CONFIG" in script
