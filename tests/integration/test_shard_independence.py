"""A user's published score does not depend on how users were sharded or batched (issue #14, item 6).

The same date scored with 1, 2 and 3 shards publishes identical rows; ``SpendModel.predict``
gives the same published (rounded) values whatever the batch size, and bit-identical raw
values for a user whichever other users share its call.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from spendpred import pipeline, warehouse
from spendpred.model import SpendModel, TrainConfig, train_regressor
from spendpred.model.bundle import PAD_BUCKET, bucketed_batches, padding_buckets
from spendpred.shards import PUBLISHED_DECIMALS, round_published
from tests.tiny_bert import FEATURE_COLUMNS, make_synthetic_users, make_tiny_bert

RUN_DATE = dt.date(2024, 6, 30)



def _published(url: str, as_of: dt.date) -> list[tuple[str, float, str]]:
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT user_id, predicted_spend, tier FROM user_spend_scores "
                    "WHERE CAST(as_of AS TEXT) = :as_of ORDER BY user_id"
                ),
                {"as_of": as_of.isoformat()},
            )
            return [(str(u), float(s), str(t)) for u, s, t in rows]
    finally:
        engine.dispose()


def test_one_two_and_three_shards_publish_identical_rows(
    tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, sqlite_url: str
) -> None:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    pipeline.seed(users=300, days=400, end_date=RUN_DATE, seed=11, url=sqlite_url)
    trained = pipeline.train(RUN_DATE, epochs=1, promote="force", url=sqlite_url)
    assert trained["promotion"]["promoted"] is True

    published = {}
    for shards in (1, 2, 3, 1):
        result = pipeline.score(RUN_DATE, shards=shards, url=sqlite_url)
        assert result["published"] is True and result["rows"] == 300
        published[shards] = (_published(sqlite_url, RUN_DATE), result["counts"], result["thresholds"])
    rows = published[1][0]
    assert len(rows) == 300 and len({u for u, _, _ in rows}) == 300
    assert published[2] == published[1] and published[3] == published[1]
    # published at the documented precision: whole cents
    spend = np.array([s for _, s, _ in rows])
    np.testing.assert_array_equal(spend, np.round(spend, PUBLISHED_DECIMALS))
    assert len(set(spend.tolist())) > 1, "a constant model would make the comparison vacuous"


@pytest.fixture(scope="module")
def model_and_users(tmp_path_factory: pytest.TempPathFactory) -> tuple[SpendModel, pd.DataFrame]:
    import torch

    torch.manual_seed(0)
    users = make_synthetic_users(330, seed=5)
    rng = np.random.default_rng(3)  # very different lengths: several padding buckets
    extra = [" ".join(["views clicks premium"] * int(k)) for k in rng.integers(0, 14, size=len(users))]
    users["text"] = users["text"] + " " + pd.Series(extra)
    bert = make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, loss="mse", max_length=64, device="cpu", progress=False)
    model = train_regressor(users.iloc[:100], users.iloc[100:130], FEATURE_COLUMNS, config, bert, "v1").bundle
    return model, users.iloc[130:].reset_index(drop=True)


def test_predict_published_values_do_not_depend_on_batch_size(model_and_users: tuple[SpendModel, pd.DataFrame]) -> None:
    model, users = model_and_users
    reference = round_published(model.predict(users, batch_size=32, precision="fp32"))
    assert len(set(reference.tolist())) > 10
    for batch_size, chunk_size in [(1, 16384), (7, 50), (64, 1000), (256, 16384)]:
        got = round_published(model.predict(users, batch_size=batch_size, chunk_size=chunk_size, precision="fp32"))
        np.testing.assert_array_equal(got, reference, err_msg=f"batch_size={batch_size}, chunk_size={chunk_size}")


def test_a_users_raw_score_does_not_depend_on_the_other_users_in_the_call(
    model_and_users: tuple[SpendModel, pd.DataFrame],
) -> None:
    model, users = model_and_users
    full = model.predict(users, batch_size=16, precision="fp32")
    rng = np.random.default_rng(9)
    subsets = [np.arange(0, len(users), 2), np.arange(1, len(users), 3), np.sort(rng.choice(len(users), 37, replace=False))]
    for subset in subsets:
        got = model.predict(users.iloc[subset], batch_size=16, chunk_size=64, precision="fp32")
        np.testing.assert_array_equal(got, full[subset])  # bit-identical: fixed batch shapes


def test_padding_buckets_depend_only_on_the_own_length() -> None:
    lengths = np.array([1, 15, 16, 17, 40, 63, 64, 5, 0])
    widths = padding_buckets(lengths, max_length=64)
    assert widths.tolist() == [16, 16, 16, 32, 48, 64, 64, 16, 16]
    assert (widths % PAD_BUCKET == 0).all() and (widths >= lengths).all()
    assert padding_buckets(np.array([50]), max_length=50).tolist() == [50]  # capped at max_length
    batches = bucketed_batches(widths, batch_size=2)
    assert [w for w, _ in batches] == [64, 48, 32, 16, 16, 16]
    assert sorted(np.concatenate([rows for _, rows in batches]).tolist()) == list(range(len(lengths)))
    assert all(len(set(widths[rows].tolist())) == 1 for _, rows in batches)


@pytest.mark.parametrize(
    ("raw", "published"),
    [([0.004, 0.005, 0.015, 12.344999, 12.345001, -0.0, 1e-9], [0.0, 0.0, 0.02, 12.34, 12.35, 0.0, 0.0])],
)
def test_published_rounding_is_to_cents(raw: list[float], published: list[float]) -> None:
    got = round_published(raw)
    assert got.dtype == np.float64 and got.tolist() == published
    assert not np.signbit(got).any()


def test_encode_then_head_is_predict_and_a_users_embedding_is_independent_of_the_call(
    model_and_users: tuple[SpendModel, pd.DataFrame],
) -> None:
    """What the embedding cache relies on: a cached row equals a fresh one bit for bit."""
    model, users = model_and_users
    texts = users["text"].tolist()
    pooled = model.encode(texts, precision="fp32")
    assert pooled.dtype == np.float32 and pooled.shape == (len(users), model.hidden_size)
    features = model.head_features(users)
    np.testing.assert_array_equal(model.predict_pooled(pooled, features), model.predict(users, precision="fp32"))
    subset = np.arange(3, len(users), 5)
    np.testing.assert_array_equal(model.encode([texts[i] for i in subset], precision="fp32"), pooled[subset])
    np.testing.assert_array_equal(model.predict_pooled(pooled[subset], features[subset]), model.predict_pooled(pooled, features)[subset])


def test_the_embedding_cache_publishes_the_same_rows_bit_for_bit(
    tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, sqlite_url: str
) -> None:
    import pyarrow.parquet as pq

    from spendpred.snapshot import RunFolder

    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    pipeline.seed(users=300, days=400, end_date=RUN_DATE, seed=12, url=sqlite_url)
    assert pipeline.train(RUN_DATE, epochs=1, promote="force", url=sqlite_url)["promotion"]["promoted"] is True

    def scored(**env: str) -> tuple[dict, list, list]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        result = pipeline.score(RUN_DATE, shards=2, url=sqlite_url)
        shard_files = [pq.read_table(RunFolder.for_date("score", RUN_DATE).shard_path(i, 2)).to_pylist() for i in range(2)]
        return result["encoder"], _published(sqlite_url, RUN_DATE), shard_files

    cold, rows_cold, files_cold = scored()
    assert (cold["users"], cold["hits"], cold["misses"], cold["cache"]) == (300, 0, 300, "cold")
    warm, rows_warm, files_warm = scored()
    assert (warm["hits"], warm["misses"], warm["cache"], warm["hit_rate"]) == (300, 0, "warm", 1.0)
    off, rows_off, files_off = scored(SPENDPRED_EMBEDDING_CACHE="false")
    assert off["cache"] == "off" and off["misses"] == 300
    assert rows_cold == rows_warm == rows_off and files_cold == files_warm == files_off
    tiers_json = RunFolder.for_date("score", RUN_DATE).tiers_json.read_text()
    assert '"encoder"' in tiers_json and '"hits": 0' in tiers_json  # the last run's figures (cache off)

    # the trend anchor (off by default) scales every score by one factor and keeps the order
    import json

    assert json.loads(tiers_json)["anchor"]["factor"] == 1.0
    _, rows_anchored, _ = scored(SPENDPRED_TREND_ANCHOR="true")
    anchor = json.loads(RunFolder.for_date("score", RUN_DATE).tiers_json.read_text())["anchor"]
    assert anchor["factor"] != 1.0 and anchor["forecast_total"] > 0 and anchor["reference_ratio"] > 0
    expected = round_published(np.array([s for _, s, _ in rows_off]) * anchor["factor"])
    np.testing.assert_array_equal(np.array([s for _, s, _ in rows_anchored]), expected)
