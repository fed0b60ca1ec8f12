"""Stable user splits and shards."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spendpred.errors import ConfigError
from spendpred.splits import assign_splits, hash_buckets, shard_of

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
