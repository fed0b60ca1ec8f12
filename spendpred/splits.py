"""Stable, seed-free assignment of users to splits and shards by a hash of the user id.

The same user always lands in the same split and shard, whatever the run, machine or
Python process (``hashlib``, not the salted built-in ``hash``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from spendpred.errors import ConfigError

_BUCKETS = 10_000


def hash_buckets(user_ids: Iterable[str], buckets: int = _BUCKETS, salt: str = "") -> np.ndarray:
    """Return an int64 array: each user id's bucket in ``[0, buckets)`` from blake2b of ``salt + id``."""
    if buckets < 1:
        raise ConfigError(f"buckets must be >= 1, got {buckets}")
    out = [
        int.from_bytes(hashlib.blake2b((salt + uid).encode("utf-8"), digest_size=8).digest(), "little") % buckets
        for uid in user_ids
    ]
    return np.asarray(out, dtype=np.int64)


def assign_splits(user_ids: Iterable[str], val_fraction: float = 0.15, test_fraction: float = 0.15) -> np.ndarray:
    """Return an array of ``'train'``, ``'val'`` or ``'test'`` per user, stable across runs.

    Raises ``ConfigError`` when the fractions are not in (0, 1) or leave no training users.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name} must be in (0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    share = hash_buckets(user_ids, salt="split:") / _BUCKETS
    return np.where(share < test_fraction, "test", np.where(share < test_fraction + val_fraction, "val", "train"))


def shard_of(user_ids: Iterable[str], shards: int) -> np.ndarray:
    """Return each user's scoring shard in ``[0, shards)``; raises ``ConfigError`` if shards < 1."""
    if shards < 1:
        raise ConfigError(f"shards must be >= 1, got {shards}")
    return hash_buckets(user_ids, buckets=shards, salt="shard:")
