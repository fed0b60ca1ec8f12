"""Keep task logs about spendpred: no third-party progress bars or import-time filler.

Airflow 3 records everything a task writes to stderr at level ERROR, so the tqdm bars of
transformers ("Loading weights") and MLflow ("Downloading artifacts") made every successful
scoring and training task look broken, and Great Expectations logs a few hundred
"Skipping registering function" lines at INFO while it is imported. ``quiet_libraries()``
turns those off; spendpred's own progress is logged at INFO (one line per step or epoch).
On an interactive terminal the bars stay: they are useful there and nothing records them.

MLflow's own messages ("Successfully registered model", "Created version '2'") went to stderr
too, so a successful registration showed red ERROR lines: ``route_mlflow_output()`` sends them
through Python logging at INFO instead (Airflow's task log, the CLI's handler).
"""

from __future__ import annotations

import logging
import os
import sys
import threading

LIBRARY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"Could not import graphviz", UserWarning),  # airflow's dags command, at import: graphviz is optional
    (r"GitWildMatchPattern \('gitwildmatch'\) is deprecated", DeprecationWarning),  # pathspec 1.x, under airflow's .airflowignore
)
"""Warnings of other libraries about themselves, nothing a spendpred user can act on: ``(message regex, category)``."""

NOISY_LOGGERS = ("great_expectations", "mlflow.store.db.utils", "alembic", "httpx")
"""Loggers lowered to WARNING: their INFO lines are library filler, not pipeline progress."""


def quiet_warnings() -> None:
    """Ignore exactly the warnings in ``LIBRARY_WARNINGS`` (idempotent; every other warning is kept).

    Called by Airflow's logging configuration for spendpred (``plugins/spendpred_logging.py``,
    ``AIRFLOW__LOGGING__LOGGING_CONFIG_CLASS``), so every Airflow process and ``airflow dags test``
    installs the filters before it lists the DAG folder, and by :func:`quiet_libraries`.
    """
    import warnings

    for message, category in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_libraries(*, force: bool | None = None) -> None:
    """Silence library progress bars and filler (idempotent; cheap).

    ``force=None`` disables progress bars only when stderr is not a terminal (a task, a pipe,
    a log file); ``True``/``False`` forces the choice. Library loggers in ``NOISY_LOGGERS``
    are lowered to WARNING in every case. Raises nothing.
    """
    quiet_warnings()
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    quiet = force if force is not None else not _stderr_is_terminal()
    if not quiet:
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    os.environ["TQDM_DISABLE"] = "1"  # any other library's bar (tqdm reads it per bar)
    if "transformers" in sys.modules:  # else the variables above are read when it is imported
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


MLFLOW_HANDLED_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")
"""Loggers that MLflow, when imported, gives a handler of its own writing to stderr (``propagate=False``)."""


class _LoggedLines:
    """A text stream that logs each complete line at INFO on ``logger``; replaces MLflow's ``MLFLOW_LOGGING_STREAM``,
    which ``mlflow.utils.logging_utils.eprint`` prints to (``enabled`` is MLflow's switch for it)."""

    def __init__(self, logger: logging.Logger, enabled: bool = True) -> None:
        self.logger = logger
        self.enabled = enabled
        self._local = threading.local()  # print() writes the text and the newline in separate calls

    def write(self, text: str) -> int:
        if not self.enabled:
            return len(text)
        pending = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = pending.split("\n")
        for line in lines:
            if line.strip():
                self.logger.info("%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        """Nothing to flush: a line is logged when it is complete."""


def route_mlflow_output() -> None:
    """Send MLflow's own output through Python logging instead of stderr (idempotent; imports MLflow).

    Importing MLflow gives the loggers in ``MLFLOW_HANDLED_LOGGERS`` a handler that writes to
    stderr, and MLflow prints some messages straight there (``eprint``: "Successfully registered
    model", "Created version '2' of model"). Airflow records stderr at ERROR. Here those loggers
    lose MLflow's handler and propagate to whatever the process configured (Airflow's task log,
    the CLI's handler), keeping their levels (``mlflow`` at MLflow's own, ``MLFLOW_LOGGING_LEVEL``,
    default INFO), and what MLflow prints becomes INFO records of logger ``mlflow``. Raises nothing.
    """
    from mlflow.utils import logging_utils

    if isinstance(logging_utils.MLFLOW_LOGGING_STREAM, _LoggedLines):
        return
    for name in MLFLOW_HANDLED_LOGGERS:
        logger = logging.getLogger(name)
        mlflows = [h for h in logger.handlers if isinstance(getattr(h, "stream", None), logging_utils.MlflowLoggingStream)]
        for handler in mlflows:
            logger.removeHandler(handler)
        if mlflows:
            logger.propagate = True
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.setLevel(logging_utils.get_mlflow_log_level())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging_utils.MLFLOW_LOGGING_STREAM = _LoggedLines(mlflow_logger, enabled=logging_utils.MLFLOW_LOGGING_STREAM.enabled)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False

