"""Stable user splits and shards."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spendpred.errors import ConfigError, DataError
from spendpred.params import MAX_SHARDS
from spendpred.splits import (
    SHARD_BUCKETS,
    assign_splits,
    hash_buckets,
    shard_bucket,
    shard_buckets,
    shard_of,
    split_frame,
    stable_subset,
)

IDS = [f"u{i:05d}" for i in range(5000)]


def test_split_fractions_are_close_to_requested() -> None:
    splits = assign_splits(IDS, 0.2, 0.1)
    shares = {k: float(np.mean(splits == k)) for k in ("train", "val", "test")}
    assert shares["test"] == pytest.approx(0.1, abs=0.02)
    assert shares["val"] == pytest.approx(0.2, abs=0.02)
    assert shares["train"] == pytest.approx(0.7, abs=0.02)


def test_same_user_same_split_in_any_order_and_process() -> None:
    a = dict(zip(IDS, assign_splits(IDS)))
    b = dict(zip(IDS[::-1], assign_splits(IDS[::-1])))
    assert a == b
    code = "from spendpred.splits import hash_buckets; print(hash_buckets(['u1', 'abc'], 1000).tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(hash_buckets(["u1", "abc"], 1000).tolist())


def test_shards_cover_every_user_once() -> None:
    shards = shard_of(IDS, 4)
    assert set(shards.tolist()) == {0, 1, 2, 3}
    assert min(np.bincount(shards)) > 1000
    assert shard_of(IDS, 1).tolist() == [0] * len(IDS)


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.1), (0.5, 0.5), (1.2, 0.1)])
def test_bad_fractions_are_refused(val: float, test: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        assign_splits(IDS, val, test)


def test_bad_shard_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="shards must be >= 1"):
        shard_of(IDS, 0)
    with pytest.raises(ConfigError, match=f"at most {SHARD_BUCKETS}, got 65"):
        shard_of(IDS, SHARD_BUCKETS + 1)
    with pytest.raises(ConfigError, match="shard must be in 0..2, got 3"):
        shard_buckets(3, 3)


def test_shards_are_made_of_fixed_buckets_whatever_their_number() -> None:
    """Each bucket belongs to exactly one shard for any count, so per-bucket files outlive a change of it."""
    assert MAX_SHARDS <= SHARD_BUCKETS  # no shard count leaves a shard without buckets
    buckets = shard_bucket(IDS)
    assert set(buckets.tolist()) == set(range(SHARD_BUCKETS))
    for shards in (1, 2, 3, 7, SHARD_BUCKETS):
        assignment = shard_of(IDS, shards)
        np.testing.assert_array_equal(assignment, buckets % shards)
        owned = [shard_buckets(s, shards) for s in range(shards)]
        assert sorted(b for part in owned for b in part) == list(range(SHARD_BUCKETS))
        for shard, part in enumerate(owned):
            assert set(buckets[assignment == shard].tolist()) <= set(part)
    # shard counts that divide the bucket count assign users as the plain hash did
    np.testing.assert_array_equal(shard_of(IDS, 4), hash_buckets(IDS, buckets=4, salt="shard:"))


def test_stable_subset_is_order_free_and_sized() -> None:
    chosen = stable_subset(IDS, 100)
    assert len(chosen) == 100 and list(chosen) == sorted(chosen)
    reversed_ids = IDS[::-1]
    assert {IDS[i] for i in chosen} == {reversed_ids[i] for i in stable_subset(reversed_ids, 100)}
    assert len(stable_subset(IDS[:50], 100)) == 50  # fewer users than asked: all of them
    with pytest.raises(ConfigError, match="max_users=99 is too small: use at least 100"):
        stable_subset(IDS, 99)


def test_a_training_set_too_small_to_mean_anything_is_refused() -> None:
    """``train --max-users`` used to train and register a model on 5/2/3 users without a word."""
    import pandas as pd

    from spendpred.errors import DataError
    from spendpred.splits import MIN_EVAL_USERS, MIN_TRAIN_USERS, check_split_sizes

    def parts(train: int, val: int, test: int) -> dict[str, pd.DataFrame]:
        return {name: pd.DataFrame({"user_id": [f"{name}{i}" for i in range(n)]})
                for name, n in (("train", train), ("val", val), ("test", test))}  # fmt: skip

    check_split_sizes(parts(MIN_TRAIN_USERS, MIN_EVAL_USERS, MIN_EVAL_USERS))  # the minimum passes
    for sizes in ((5, 2, 3), (MIN_TRAIN_USERS - 1, 30, 30), (200, MIN_EVAL_USERS - 1, 30), (200, 30, MIN_EVAL_USERS - 1)):
        with pytest.raises(DataError, match=r"too few users to train a model that means anything: .* nothing was "
                                            r"trained or registered: train on more users") as raised:  # fmt: skip
            check_split_sizes(parts(*sizes))
        assert f"{sizes[0]} training, {sizes[1]} validation and {sizes[2]} held-out users" in str(raised.value)


def test_split_frame_keeps_users_in_their_split() -> None:
    import pandas as pd

    frame = pd.DataFrame({"user_id": IDS, "label": np.arange(len(IDS), dtype=float)})
    parts = split_frame(frame)
    assert sum(len(p) for p in parts.values()) == len(IDS)
    expected = dict(zip(IDS, assign_splits(IDS)))
    for name, part in parts.items():
        assert set(part["split"]) == {name} and all(expected[u] == name for u in part["user_id"])
    subset = split_frame(frame, max_users=300)
    assert len(subset["train"]) + len(subset["val"]) < 300
    assert set(subset["train"]["user_id"]) <= set(parts["train"]["user_id"])  # a subset never moves users
    # the held-out set is fixed by user hash: every test user, whatever the subset
    assert subset["test"]["user_id"].tolist() == parts["test"]["user_id"].tolist()


def test_split_frame_names_an_empty_split() -> None:
    import pandas as pd

    with pytest.raises(DataError, match=r"the \w+ split is empty \(3 users in the snapshot\)"):
        split_frame(pd.DataFrame({"user_id": ["a", "b", "c"], "label": [1.0, 2.0, 3.0]}))
