"""Level correction of the nightly scores (issue 24, item 4): a second night's published scores are
its uncorrected scores times 1 / the realized predicted/actual ratio of the first night's matured
partition of the same model version, ranks and tiers kept, the factor stored; off, nothing changes.

One tiny model (``tests/tiny_bert.py``'s encoder) trained on seeded data, scored through the
nightly path (``pipeline.score``) against a real SQLite warehouse and MLflow store.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from spendpred import monitoring, pipeline, warehouse
from spendpred.shards import round_published

RUN_DATE = dt.date(2024, 6, 30)
H = 60
NIGHT2 = RUN_DATE - dt.timedelta(days=H)  # the training snapshot's date
NIGHT1 = NIGHT2 - dt.timedelta(days=H + 1)  # its horizon ends the day before NIGHT2: evaluated by then


def _published(url: str, as_of: dt.date) -> pd.DataFrame:
    with warehouse.opened_engine(url) as engine:
        return monitoring.read_realized(engine, as_of, H).set_index("user_id").sort_index()


def _corrections(url: str) -> list[tuple]:
    with warehouse.opened_engine(url) as engine, engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT CAST(as_of AS TEXT), model_version, factor, unclipped_factor, CAST(based_on_as_of AS TEXT) "
            "FROM level_corrections ORDER BY as_of"))]  # fmt: skip


def test_second_night_is_scaled_by_the_first_nights_realized_ratio(
    tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, warehouse_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", str(H))
    pipeline.seed(users=300, days=400, end_date=RUN_DATE, seed=11, url=warehouse_url)
    trained = pipeline.train(RUN_DATE, epochs=1, promote="force", url=warehouse_url)
    version = str(trained["version"])

    monkeypatch.setenv("SPENDPRED_LEVEL_CORRECTION", "true")
    first = pipeline.score(NIGHT1, url=warehouse_url)  # nothing matured yet: factor 1, recorded as such
    assert first["published"] is True
    assert _corrections(warehouse_url) == [(NIGHT1.isoformat(), version, 1.0, None, None)]
    evaluated = pipeline.evaluate_matured(NIGHT2 - dt.timedelta(days=1), url=warehouse_url, draws=10)
    assert [e["as_of"] for e in evaluated["evaluated"]] == [NIGHT1.isoformat()]
    with warehouse.opened_engine(warehouse_url) as engine:
        rows = monitoring.read_partition_metrics(engine, NIGHT1)
    (ratio,) = [r["value"] for r in rows if r["scorer"] == "model" and r["metric"] == "total_ratio"]
    expected = min(max(1.0 / ratio, monitoring.LEVEL_CLIP[0]), monitoring.LEVEL_CLIP[1])

    monkeypatch.setenv("SPENDPRED_LEVEL_CORRECTION", "false")  # off: the uncorrected scores, nothing stored
    off = pipeline.score(NIGHT2, url=warehouse_url)
    raw = _published(warehouse_url, NIGHT2)
    assert [r[0] for r in _corrections(warehouse_url)] == [NIGHT1.isoformat()]

    monkeypatch.setenv("SPENDPRED_LEVEL_CORRECTION", "true")
    with caplog.at_level("INFO", logger="spendpred.pipeline.nightly"):
        second = pipeline.score(NIGHT2, url=warehouse_url)
    corrected = _published(warehouse_url, NIGHT2)
    assert list(corrected.index) == list(raw.index)
    np.testing.assert_allclose(corrected["predicted_spend"], round_published(raw["predicted_spend"].to_numpy() * expected), atol=1e-9)
    assert (corrected["tier"] == raw["tier"]).all()  # ranks kept, so the tiers are the same
    assert second["counts"] == off["counts"]
    (stored,) = [r for r in _corrections(warehouse_url) if r[0] == NIGHT2.isoformat()]
    assert stored[1] == version and stored[2] == pytest.approx(expected) and stored[3] == pytest.approx(1.0 / ratio)
    assert stored[4] == NIGHT1.isoformat()
    assert any("level correction for %s" % NIGHT2 in r.getMessage() and "from the partition as of %s" % NIGHT1 in r.getMessage()
               for r in caplog.records)  # fmt: skip

    again = pipeline.score(NIGHT2, url=warehouse_url)  # a rerun: the same factor, the same scores
    assert again["thresholds"] == second["thresholds"]
    pd.testing.assert_frame_equal(_published(warehouse_url, NIGHT2), corrected)
    assert [r for r in _corrections(warehouse_url) if r[0] == NIGHT2.isoformat()] == [stored]

    monkeypatch.setenv("SPENDPRED_LEVEL_CORRECTION", "false")  # republished uncorrected: its factor is gone
    pipeline.score(NIGHT2, url=warehouse_url)
    pd.testing.assert_frame_equal(_published(warehouse_url, NIGHT2).drop(columns="scored_at", errors="ignore"),
                                  raw.drop(columns="scored_at", errors="ignore"))  # fmt: skip
    assert [r[0] for r in _corrections(warehouse_url)] == [NIGHT1.isoformat()]
