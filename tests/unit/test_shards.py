"""The shard loop and the gathering of shards, with a stand-in model and real Parquet files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendpred import shards
from spendpred.errors import DataError, ModelError
from spendpred.splits import shard_of

USERS = [f"u{i:04d}" for i in range(300)]


class _Model:
    """Encodes text "t0042" as [42.0] and predicts the embedding; records the batches and threads it was given."""

    feature_columns = ["tenure_days"]
    hidden_size = 1

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def head_features(self, frame: pd.DataFrame, what: str) -> np.ndarray:
        return frame[self.feature_columns].to_numpy(np.float32)

    def encode(self, texts: list[str], batch_size: int | None = None, precision: str = "auto",
               num_threads: int | None = None) -> np.ndarray:  # fmt: skip
        self.calls.append((len(texts), num_threads))
        return np.array([[float(t[1:])] for t in texts], dtype=np.float32)

    def population_forecast(self, frame: pd.DataFrame) -> None:
        return None  # no trend anchor

    def predict_pooled(self, pooled: np.ndarray, features: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        return pooled[:, 0].astype(np.float64)


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot.parquet"
    table = pa.table({"user_id": USERS, "text": ["t" + u[1:] for u in USERS], "tenure_days": [1.0] * len(USERS), "extra": [0.0] * len(USERS)})
    pq.write_table(table, path, row_group_size=64)
    return path


def test_each_shard_scores_its_own_users_once(snapshot_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "READ_BATCH_ROWS", 50)  # several batches
    model = _Model()
    seen: list[str] = []
    for shard in range(3):
        out = tmp_path / "shards" / f"shard-{shard}.parquet"
        stats = shards.score_shard_file(model, snapshot_file, out, shard, 3, threads=2)
        table = pq.read_table(out)
        assert table.schema == pa.schema([("user_id", pa.string()), ("predicted_spend", pa.float64())])
        assert stats.users == table.num_rows == stats.misses and stats.hits == 0 and stats.cache_state == "off"
        ids = table.column("user_id").to_pylist()
        assert set(shard_of(ids, 3)) <= {shard}
        assert table.column("predicted_spend").to_pylist() == [float(u[1:]) for u in ids]
        seen += ids
    assert sorted(seen) == USERS
    assert {threads for _, threads in model.calls} == {2}
    assert not list((tmp_path / "shards").glob(".*"))  # no temporary file left


def test_a_failing_model_leaves_no_shard_file(snapshot_file: Path, tmp_path: Path) -> None:
    class Failing(_Model):
        def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
            raise RuntimeError("out of memory")

    out = tmp_path / "shard.parquet"
    with pytest.raises(RuntimeError, match="out of memory"):
        shards.score_shard_file(Failing(), snapshot_file, out, 0, 1)
    assert list(tmp_path.iterdir()) == [snapshot_file]


def test_coverage_and_gathering(tmp_path: Path) -> None:
    results = [{"shard": 1, "shards": 2, "model_version": "3"}, {"shard": 0, "shards": 2, "model_version": "3"}]
    assert shards.check_coverage(results) == (2, "3")
    with pytest.raises(DataError, match="no scored shards"):
        shards.check_coverage([])
    with pytest.raises(DataError, match=r"scored shards \[0\] do not cover 0..1"):
        shards.check_coverage(results[1:])
    with pytest.raises(DataError, match="different model versions"):
        shards.check_coverage([results[0], {**results[1], "model_version": "4"}])
    paths = []
    for i, ids in enumerate((["a", "b"], ["c"])):
        paths.append(tmp_path / f"{i}.parquet")
        pq.write_table(pa.table({"user_id": ids, "predicted_spend": [1.0] * len(ids)}), paths[-1])
    assert shards.gather(paths, 3).column("user_id").to_pylist() == ["a", "b", "c"]
    with pytest.raises(DataError, match="scored 3 users but the snapshot holds 4"):
        shards.gather(paths, 4)


def test_template_versions_must_match() -> None:
    shards.require_same_template("v1", "v1", "spendpred-regressor version 2")
    with pytest.raises(ModelError, match="version 2 was trained on text template 'v1' but the snapshot uses 'v0'"):
        shards.require_same_template("v1", "v0", "spendpred-regressor version 2")


def test_the_anchor_scales_by_exact_totals_whatever_the_split() -> None:
    anchor = {"method": "btyd-total-ratio", "reference_ratio": 2.0}
    table = pa.table({"user_id": ["a", "b", "c"], "predicted_spend": [10.0, 20.0, 10.0]})
    whole = shards.Totals()
    whole.add([10.0, 20.0, 10.0], [16.0, 32.0, 16.0])
    parts = [shards.Totals(), shards.Totals()]
    parts[0].add([10.0], [16.0])
    parts[1].add([20.0, 10.0], [32.0, 16.0])
    scaled, info = shards.apply_anchor(table, [{"totals": whole.as_dict()}], anchor)
    again, info_parts = shards.apply_anchor(table, [{"totals": p.as_dict()} for p in parts], anchor)
    assert info == info_parts and info["factor"] == 0.8 and info["predicted_total"] == 40.0 and info["forecast_total"] == 64.0
    assert scaled.column("predicted_spend").to_pylist() == again.column("predicted_spend").to_pylist() == [8.0, 16.0, 8.0]
    unchanged, info = shards.apply_anchor(table, [{"totals": {"predicted_cents": 4000, "forecast_cents": None}}], anchor)
    assert unchanged is table and info["factor"] == 1.0  # no forecast (a model without hybrid features)


def test_a_model_for_another_horizon_is_refused() -> None:
    shards.require_same_horizon(90, 90, "spendpred-regressor version 2")
    shards.require_same_horizon(None, 90, "spendpred-regressor version 2")  # a bundle from before the record
    with pytest.raises(ModelError, match=r"version 2 predicts spend over 180 days but .*SPENDPRED_HORIZON_DAYS=90: "
                                         r"set SPENDPRED_HORIZON_DAYS=180, or score with a version trained with horizon=90"):
        shards.require_same_horizon(180, 90, "spendpred-regressor version 2")
