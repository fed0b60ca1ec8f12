"""Stable, seed-free assignment of users to splits and shards by a hash of the user id.

The same user always lands in the same split and shard, whatever the run, machine or
Python process (``hashlib``, not the salted built-in ``hash``). A user's shard derives from
a fixed number of buckets (:data:`SHARD_BUCKETS`, :func:`shard_bucket`): shard ``i`` of ``n``
holds the buckets ``b`` with ``b % n == i``, so every bucket belongs to exactly one shard for
any shard count, and what is kept per bucket (the embedding cache) outlives a change of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from spendpred.errors import ConfigError, DataError
from spendpred.params import MIN_USERS

if TYPE_CHECKING:
    import pandas as pd

_BUCKETS = 10_000
SPLITS: tuple[str, ...] = ("train", "val", "test")


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


SHARD_BUCKETS = 64
"""Fixed number of user buckets that shards are made of (never change it: the embedding cache's
files are named after these buckets). It is at least ``params.MAX_SHARDS``, so no shard is
empty; shard counts that divide it get equal shares of users."""


def shard_bucket(user_ids: Iterable[str]) -> np.ndarray:
    """Return each user id's bucket in ``[0, SHARD_BUCKETS)`` (int64), whatever the shard count."""
    return hash_buckets(user_ids, buckets=SHARD_BUCKETS, salt="shard:")


def shard_of(user_ids: Iterable[str], shards: int) -> np.ndarray:
    """Return each user's scoring shard in ``[0, shards)``: its :func:`shard_bucket` modulo ``shards``.

    Raises ``ConfigError`` unless ``1 <= shards <= SHARD_BUCKETS``.
    """
    return shard_bucket(user_ids) % _check_shards(shards)


def shard_buckets(shard: int, shards: int) -> list[int]:
    """Return the buckets shard ``shard`` of ``shards`` holds; raises ``ConfigError`` for a bad shard or count."""
    count = _check_shards(shards)
    if not 0 <= int(shard) < count:
        raise ConfigError(f"shard must be in 0..{count - 1}, got {shard}")
    return list(range(int(shard), SHARD_BUCKETS, count))


def _check_shards(shards: int) -> int:
    if not 1 <= int(shards) <= SHARD_BUCKETS:
        raise ConfigError(f"shards must be >= 1 and at most {SHARD_BUCKETS}, got {shards}: use 1..{SHARD_BUCKETS} shards")
    return int(shards)


def stable_subset(user_ids: Iterable[str], max_users: int) -> np.ndarray:
    """Return the sorted row positions of a stable hash-chosen subset of at most ``max_users`` users.

    The same users are chosen whatever the row order, run or machine. Raises ``ConfigError``
    when ``max_users`` is below ``MIN_USERS``.
    """
    if int(max_users) < MIN_USERS:
        raise ConfigError(
            f"max_users={max_users} is too small: use at least {MIN_USERS} (or leave it empty for all users)"
        )
    order = np.argsort(hash_buckets(user_ids, buckets=2**31 - 1, salt="subset:"), kind="stable")
    return np.sort(order[: int(max_users)])


MIN_TRAIN_USERS = 50
"""Fewer training users than this fit nothing that means anything: ``check_split_sizes`` refuses them."""
MIN_EVAL_USERS = 10
"""Fewer validation (early stopping, calibration) or held-out (evaluation) users than this decide nothing."""


def check_split_sizes(parts: dict[str, pd.DataFrame]) -> None:
    """Refuse a training set too small to mean anything, before anything is trained or registered.

    ``parts`` is ``split_frame``'s result (possibly with stacked windows added). Raises
    ``DataError`` naming the sizes, the minimums (``MIN_TRAIN_USERS``, ``MIN_EVAL_USERS``) and the fix.
    """
    sizes = {name: len(parts[name]) for name in SPLITS}
    if sizes["train"] >= MIN_TRAIN_USERS and min(sizes["val"], sizes["test"]) >= MIN_EVAL_USERS:
        return
    raise DataError(
        f"too few users to train a model that means anything: {sizes['train']} training, {sizes['val']} validation and "
        f"{sizes['test']} held-out users (at least {MIN_TRAIN_USERS}, {MIN_EVAL_USERS} and {MIN_EVAL_USERS}); nothing "
        "was trained or registered: train on more users (a larger or no --max-users, or a later date)"
    )


def split_frame(frame: pd.DataFrame, max_users: int | None = None) -> dict[str, pd.DataFrame]:
    """Return the ``train``, ``val`` and ``test`` users of a labelled snapshot frame.

    Each user lands in a split by :func:`assign_splits` (column ``split`` added). The ``test``
    split is the held-out set fixed by user hash: every test user of the snapshot, whatever
    ``max_users``, so that candidates trained on different subsets and the champion are
    compared on the same users. ``max_users`` keeps a stable subset (:func:`stable_subset`)
    of the other users for training and validation. Raises ``ConfigError`` for a too small
    ``max_users`` and ``DataError`` naming the split when one is empty.
    """
    frame = frame.assign(split=assign_splits(frame["user_id"]))
    held_out = frame[frame["split"] == "test"].reset_index(drop=True)
    if max_users is not None:
        frame = frame.iloc[stable_subset(frame["user_id"], max_users)].reset_index(drop=True)
    parts = {name: frame[frame["split"] == name].reset_index(drop=True) for name in ("train", "val")}
    parts["test"] = held_out
    for name, part in parts.items():
        if len(part) == 0:
            raise DataError(f"the {name} split is empty ({len(frame)} users in the snapshot): train on more users")
    return parts
