"""Exceptions raised by spendpred: each message names what is wrong and how to fix it.

Two families, so that every front end can decide whether trying again helps:

* ``SpendpredError`` and its subclasses are *permanent*: bad settings or parameters, bad
  data, a failed validation, a missing model. Running the same step again gives the same
  error, so Airflow fails the task at once (no retry) and the CLI exits with status 2.
* ``TransientError`` (mixed into a permanent class where the cause is an outage) marks a
  failure that may pass on its own: a lost connection, a lock timeout, an unreachable
  registry. Airflow retries those with back-off.
"""

from __future__ import annotations


class SpendpredError(Exception):
    """Base class of every error spendpred raises on purpose."""


class TransientError(SpendpredError):
    """A failure that a retry may fix (connection lost, lock timeout, service unreachable)."""


class ConfigError(SpendpredError):
    """A setting or parameter is missing or invalid."""


class DataError(SpendpredError):
    """Input data (a file, a table, a snapshot) is malformed."""


class ValidationFailed(DataError):
    """A snapshot failed its Great Expectations suite; nothing downstream may run."""


class ModelError(SpendpredError):
    """A model artifact or registry version is missing, corrupt or incompatible."""


class RegistryUnavailable(ModelError, TransientError):
    """The MLflow tracking server or artifact store could not be reached; retrying may help."""


class PublishError(SpendpredError):
    """Publishing scores to the warehouse failed; the previous contents are kept."""


class PublishInterrupted(PublishError, TransientError):
    """Publishing was interrupted by the database (connection lost, lock timeout); rolled back."""


TRANSIENT_MLFLOW_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})
"""MLflow error codes of outages (an unreachable server answers ``INTERNAL_ERROR``)."""


def is_transient_mlflow(exc: BaseException) -> bool:
    """Return whether an ``MlflowException`` reports an outage rather than a missing object."""
    return getattr(exc, "error_code", None) in TRANSIENT_MLFLOW_CODES
