"""No train/serve skew (issue 24, Evidence): for one model, one date and the same users, the score the
nightly publishes equals the prediction the retrain's evaluation made, and the realized evaluation
reads the same labels the retrain evaluated against.

The retrain at run date R evaluates its held-out users on features as of A = R - H
(``test_predictions.parquet``, column ``bert_finetuned``; ``result.json``'s metrics). The nightly
run at A scores every user with the champion through the production path (extract, validate, shard,
tiers, publish). Through the real pipeline functions, a tiny random BERT and a small synthetic
warehouse, this test checks that for the held-out users

* the published ``predicted_spend`` is the held-out prediction rounded to cents,
* the realized evaluation's actual spend (``monitoring.read_realized``: completed spend in (A, A + H])
  is the retrain's label, and its past spend the snapshot's,
* so the metrics computed from what was published equal the metrics the retrain logged.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spendpred import metrics, monitoring, pipeline, warehouse
from spendpred.errors import ModelError
from spendpred.shards import round_published
from spendpred.snapshot import RunFolder

RUN_DATE = dt.date(2024, 6, 30)
H = 60
AS_OF = RUN_DATE - dt.timedelta(days=H)  # the training snapshot's date: the night scored with the same features



def test_published_scores_equal_the_retrains_held_out_predictions(
    tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, warehouse_url: str
) -> None:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", str(H))
    pipeline.seed(users=400, days=400, end_date=RUN_DATE, seed=11, url=warehouse_url)
    trained = pipeline.train(RUN_DATE, epochs=1, promote="force", url=warehouse_url)
    run = RunFolder.from_ref(trained)
    assert run.as_of == AS_OF
    held_out = pd.read_parquet(run.test_predictions).set_index("user_id")
    assert len(held_out) >= 30

    scored = pipeline.score(AS_OF, url=warehouse_url)  # the nightly path, as in production
    assert scored["published"] is True and scored["model_version"] == trained["version"]
    with warehouse.opened_engine(warehouse_url) as engine:
        published = monitoring.read_realized(engine, AS_OF, H).set_index("user_id")
    assert set(held_out.index) <= set(published.index)  # every held-out user was scored that night
    served = published.loc[held_out.index]
    assert set(served["model_version"]) == {trained["version"]}

    # the score: the retrain's held-out prediction, rounded to cents as every published score is
    expected = round_published(held_out["bert_finetuned"].to_numpy())
    np.testing.assert_allclose(served["predicted_spend"].to_numpy(), expected, rtol=0, atol=0.0051)
    assert float(np.max(np.abs(served["predicted_spend"].to_numpy() - held_out["bert_finetuned"].to_numpy()))) <= 0.0051
    # the labels: the realized evaluation reads the retrain's label window, no more, no less
    np.testing.assert_allclose(served["actual_spend"].to_numpy(), held_out["label"].to_numpy(), rtol=1e-9, atol=1e-9)
    assert float(held_out["label"].sum()) > 0
    np.testing.assert_allclose(served["past_spend"].to_numpy(), held_out["past_spend"].to_numpy(), rtol=1e-9, atol=1e-9)

    # so the ranking metrics from the published scores are the retrain's (ties aside: cents can tie two users)
    realized = metrics.evaluate(served["actual_spend"].to_numpy(), served["predicted_spend"].to_numpy())
    reported = trained["metrics"]
    assert realized["total_actual"] == pytest.approx(reported["total_actual"], rel=1e-9)
    assert realized["total_ratio"] == pytest.approx(reported["total_ratio"], abs=0.01 * len(held_out) / reported["total_actual"])
    for key in ("normalised_gini", "top10_capture", "spearman"):
        assert not math.isnan(realized[key])
        assert realized[key] == pytest.approx(reported[key], abs=0.01), key

    # a champion trained for H days is never published as spend over another horizon (on CDNOW a
    # 180-day model read as 90 days looked 2.8x too high): the nightly refuses it, naming both
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", str(H + 30))
    night = AS_OF + dt.timedelta(days=1)
    with pytest.raises(ModelError, match=rf"predicts spend over {H} days but .*SPENDPRED_HORIZON_DAYS={H + 30}: set "):
        pipeline.score(night, url=warehouse_url)
    with warehouse.opened_engine(warehouse_url) as engine:
        assert monitoring.read_realized(engine, night, H).empty  # nothing published for that night
