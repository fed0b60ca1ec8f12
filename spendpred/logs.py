"""Keep task logs about spendpred: no third-party progress bars or import-time filler.

Airflow 3 records everything a task writes to stderr at level ERROR, so the tqdm bars of
transformers ("Loading weights") and MLflow ("Downloading artifacts") made every successful
scoring and training task look broken, and Great Expectations logs a few hundred
"Skipping registering function" lines at INFO while it is imported. ``quiet_libraries()``
turns those off; spendpred's own progress is logged at INFO (one line per step or epoch).
On an interactive terminal the bars stay: they are useful there and nothing records them.
"""

from __future__ import annotations

import logging
import os
import sys

NOISY_LOGGERS = ("great_expectations", "mlflow.store.db.utils", "alembic", "httpx")
"""Loggers lowered to WARNING: their INFO lines are library filler, not pipeline progress."""


def quiet_libraries(*, force: bool | None = None) -> None:
    """Silence library progress bars and filler (idempotent; cheap).

    ``force=None`` disables progress bars only when stderr is not a terminal (a task, a pipe,
    a log file); ``True``/``False`` forces the choice. Library loggers in ``NOISY_LOGGERS``
    are lowered to WARNING in every case. Raises nothing.
    """
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


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False

