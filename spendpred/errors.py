"""Exceptions raised by spendpred: each message names what is wrong and how to fix it.

Two families, so that every front end can decide whether trying again helps:

* ``SpendpredError`` and its subclasses are *permanent*: bad settings or parameters, bad
  data, a failed validation, a missing model. Running the same step again gives the same
  error, so Airflow fails the task at once (no retry) and the CLI exits with status 2.
* ``TransientError`` (mixed into a permanent class where the cause is an outage) marks a
  failure that may pass on its own: a lost connection, a lock timeout, an unreachable
  registry. Airflow retries those with back-off.

The front ends' error path (``spendpred.failures``: one line per expected failure, the
library errors sorted into these families) and the masking of secrets in messages
(``spendpred.masking``) live apart: this module is the ground floor, it imports nothing, so
every module may raise these.
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


class RegistryError(ModelError):
    """MLflow refused a request for a reason a retry cannot fix: a bad value, an object that is missing
    or already exists, no permission (an HTTP 4xx answer other than 408 and 429)."""


class RegistryUnavailable(RegistryError, TransientError):
    """The MLflow tracking server or artifact store could not be reached or failed (a refused or lost
    connection, HTTP 5xx, 408 or 429); retrying may help."""


class PublishError(SpendpredError):
    """Publishing scores to the warehouse failed; the previous contents are kept."""


class PublishInterrupted(PublishError, TransientError):
    """Publishing was interrupted by the database (connection lost, lock timeout); rolled back."""


class WarehouseError(SpendpredError):
    """The warehouse refused a connection or a statement for a reason a retry cannot fix: wrong
    credentials, database or role, missing rights or tables, a read-only SQLite file."""


class WarehouseUnavailable(WarehouseError, TransientError):
    """The warehouse could not be reached or was busy (connection refused or lost, timeout, lock); retrying may help."""


class StorageError(SpendpredError):
    """A file or folder cannot be used (permission denied, read-only disk, a file in the way)."""


class StorageFull(StorageError, TransientError):
    """A disk is full or a quota is reached; retrying once space is freed may help."""
