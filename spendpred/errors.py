"""Exceptions raised by spendpred: each message names what is wrong and how to fix it."""

from __future__ import annotations


class SpendpredError(Exception):
    """Base class of every error spendpred raises on purpose."""


class ConfigError(SpendpredError):
    """A setting or parameter is missing or invalid."""


class DataError(SpendpredError):
    """Input data (a file, a table, a snapshot) is malformed."""


class ValidationFailed(DataError):
    """A snapshot failed its Great Expectations suite; nothing downstream may run."""


class ModelError(SpendpredError):
    """A model artifact is missing, corrupt or incompatible."""


class PublishError(SpendpredError):
    """Publishing scores to the warehouse failed; the previous contents are kept."""
