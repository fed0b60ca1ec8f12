"""An injected shift on synthetic data (issue 24, Evidence): a champion trained on a small synthetic
warehouse (tiny random BERT, its ``reference.json`` saved with the bundle), then consecutive nights
appended with ``append_day`` and scored through the production path (``pipeline.score``), each
checked by the nightly's drift step (``pipeline.check_drift`` against the champion's reference).

Against a reference of the same age as the nights (the champion's first night, built with the
same ``monitoring.build_reference``), unshifted nights raise no alert. Against the champion's own
reference (its training snapshot, as of R - H) they alert on the age features only: tenure, first
purchase and recency move by H days between reference and night (a known false alarm, measured by
``bench/drift_false_alarms.py``). On the first night after the source switches to cents (``spendpred
seed --append-day D --shift cents``: the stored amounts restated x100, new rows in cents) the money
features alert against both references, and nothing else new does. The shift option itself is
checked on the rows it writes, and bad shifts are refused in one line (exit 2).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from spendpred import pipeline, synth, warehouse
from spendpred.errors import ConfigError
from spendpred.snapshot import RunFolder

D0 = dt.date(2024, 6, 30)
H = 30
CALM_NIGHTS = 3
MONEY = {"monetary_30d", "monetary_90d", "monetary_365d", "monetary_all", "avg_basket", "repeat_value"}
AGE = {"tenure_days", "first_purchase_days", "recency_days"}  # move with the reference's age (see the docstring)
SPENDPRED = str(Path(sys.executable).with_name("spendpred"))



def _money(url: str, day: dt.date | None = None) -> tuple[float, float]:
    """(sum of order amounts, sum of event prices), of rows on ``day`` only when given."""
    where = "" if day is None else " WHERE {col} >= :lo AND {col} < :hi"
    params = {} if day is None else {"lo": day.isoformat(), "hi": (day + dt.timedelta(days=1)).isoformat()}
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            orders = conn.execute(sa.text("SELECT COALESCE(SUM(amount), 0) FROM orders" + where.format(col="ordered_at")), params).scalar()
            prices = conn.execute(sa.text("SELECT COALESCE(SUM(price), 0) FROM events" + where.format(col="occurred_at")), params).scalar()
    finally:
        engine.dispose()
    return float(orders), float(prices)


def _night(day: dt.date, url: str, first_night: dict, shift: str | None = None) -> tuple[dict, dict]:
    """Append and score a night; return its drift against the first night's reference and the champion's (stored last)."""
    pipeline.append_day(day, seed=3, url=url, shift=shift)
    scored = pipeline.score(day, url=url)
    assert scored["published"] is True
    run = RunFolder.for_date("score", day).ref()
    return pipeline.check_drift(run, url, reference=first_night), pipeline.check_drift(run, url)


def _reference_of_night(day: dt.date) -> dict:
    """A reference built like the champion's, from a published night's snapshot and scores."""
    import pandas as pd

    from spendpred import monitoring
    from spendpred.snapshot import FEATURE_COLUMNS

    run = RunFolder.for_date("score", day)
    frame = pd.read_parquet(run.snapshot.parquet)
    predicted = pd.read_parquet(run.tiers_parquet, columns=["predicted_spend"])["predicted_spend"].to_numpy()
    return monitoring.build_reference(frame, list(FEATURE_COLUMNS), predicted)


def test_first_night_in_cents_alerts_on_the_money_features_and_calm_nights_do_not(
    tiny_encoder: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, sqlite_url: str
) -> None:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tiny_encoder))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", str(H))
    pipeline.seed(users=500, days=400, end_date=D0, seed=5, url=sqlite_url)
    trained = pipeline.train(D0, epochs=1, promote="force", url=sqlite_url)
    assert (RunFolder.from_ref(trained).bundle_dir / "reference.json").is_file()  # the champion's reference

    assert pipeline.score(D0, url=sqlite_url)["published"] is True  # the champion's first night
    first_night = _reference_of_night(D0)

    for k in range(1, CALM_NIGHTS + 1):
        same_age, champion = _night(D0 + dt.timedelta(days=k), sqlite_url, first_night)
        for calm in (same_age, champion):
            assert calm["model_version"] == trained["version"] and "skipped" not in calm
            assert sum(calm["counts"].values()) == 29  # 28 features and predicted_spend
        assert same_age["alert"] == [], (k, same_age)
        assert set(champion["alert"]) <= AGE, (k, champion)

    shift_day = D0 + dt.timedelta(days=CALM_NIGHTS + 1)
    before = _money(sqlite_url)
    same_age, shifted = _night(shift_day, sqlite_url, first_night, shift="cents")
    after_history = _money(sqlite_url)
    today = _money(sqlite_url, shift_day)
    # the stored money was restated x100 (the day's own rows are in cents too)
    assert after_history[0] - today[0] == pytest.approx(100 * before[0], rel=1e-9)
    assert after_history[1] - today[1] == pytest.approx(100 * before[1], rel=1e-9)
    for night, allowed in ((same_age, MONEY | {"predicted_spend"}), (shifted, MONEY | {"predicted_spend"} | AGE)):
        assert {"monetary_90d", "monetary_365d", "monetary_all", "avg_basket"} <= set(night["alert"]), night
        assert set(night["alert"]) <= allowed, night  # only what the shift moved (and, for the champion's, the age)
    alerting = set(shifted["alert"])
    engine = warehouse.get_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            stored = dict(conn.execute(sa.text("SELECT feature, status FROM drift_metrics WHERE as_of = :d"),
                                       {"d": shift_day.isoformat()}).all())  # fmt: skip
    finally:
        engine.dispose()
    assert {f for f, s in stored.items() if s == "alert"} == alerting  # a row per feature, as logged


def test_price_level_and_rename_shifts_write_what_they_say(sqlite_url: str) -> None:
    pipeline.seed(users=400, days=120, end_date=D0, seed=2, url=sqlite_url)
    first = D0 + dt.timedelta(days=1)
    plain = pipeline.append_day(first, seed=3, url=sqlite_url, shift="price=1.5", shift_from=first + dt.timedelta(days=1))
    assert "shift" not in plain  # before its first day a shift changes nothing
    history = _money(sqlite_url)
    second = first + dt.timedelta(days=1)
    level = pipeline.append_day(second, seed=3, url=sqlite_url, shift="price=1.5", shift_from=second)
    assert level["shift"] == {"kind": "price", "since": second.isoformat(), "restated": {}}
    assert _money(sqlite_url)[0] - _money(sqlite_url, second)[0] == pytest.approx(history[0])  # history untouched
    third = second + dt.timedelta(days=1)
    renamed = pipeline.append_day(third, seed=3, url=sqlite_url, shift="rename=books:literature")
    assert renamed["shift"]["restated"]["orders"] > 0
    engine = warehouse.get_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            categories = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT category FROM orders UNION SELECT DISTINCT category FROM events"))}
    finally:
        engine.dispose()
    assert "literature" in categories and "books" not in categories

    # the same shift on the same warehouse state writes the same rows: a price=1.5 day is the plain day x 1.5
    a = synth.parse_shift("price=1.5", first)
    assert (a.kind, a.factor, a.money_factor, a.restates(first)) == ("price", 1.5, 1.5, False)
    assert synth.parse_shift("cents", first).restates(first) and not synth.parse_shift("cents", first).restates(second)
    for bad, message in (("price=1", "other than 1"), ("price=-2", "is not a number"), ("rename=books", "new category name"),
                         ("rename=nope:x", "is not a category"), ("euros", "unknown shift")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            synth.parse_shift(bad, first)


def test_seed_command_takes_the_shift_and_refuses_bad_ones(sqlite_url: str) -> None:
    pipeline.seed(users=200, days=60, end_date=D0, seed=2, url=sqlite_url)
    day = (D0 + dt.timedelta(days=1)).isoformat()
    for args, message in (
        (["--append-day", day, "--shift", "price=0"], "is not a number in (0, 1000]"),
        (["--shift", "cents"], "--shift and --shift-from apply only with --append-day"),
        (["--append-day", day, "--shift-from", day], "--shift-from needs --shift"),
    ):
        done = subprocess.run([SPENDPRED, "seed", *args, "--url", sqlite_url], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
    before = _money(sqlite_url)
    done = subprocess.run([SPENDPRED, "seed", "--append-day", day, "--shift", "cents", "--url", sqlite_url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"kind": "cents"' in done.stdout
    assert _money(sqlite_url)[0] - _money(sqlite_url, D0 + dt.timedelta(days=1))[0] == pytest.approx(100 * before[0])
