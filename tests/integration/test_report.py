"""The read side on SQLite and PostgreSQL: what the page, ``spendpred report`` and ``spendpred summary`` read."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from spendpred import publish, report, ui, warehouse
from spendpred.config import Settings
from spendpred.tiers import assign_tiers
from tests.integration.test_publish import D1, D2, D3, STAMP, _run, engine
from tests.unit.test_ui import CHAMPION  # the page's hand-made champion, one copy

__all__ = ["engine"]  # the fixture, shared with test_publish.py


def test_latest_run_summary_on_an_empty_warehouse(engine: sa.Engine) -> None:
    summary = report.latest_run_summary(engine)
    assert summary["as_of"] is None and summary["previous_as_of"] is None
    assert summary["user_count"] == 0
    assert summary["tier_sizes"] == {"high": 0, "medium": 0, "low": 0}
    assert summary["movement"]["paired"] == 0


def test_latest_run_summary_describes_the_latest_run_and_its_movement(engine: sa.Engine) -> None:
    oldest, oldest_thresholds = _run(30, seed=20)
    publish.publish_scores(engine, D1, oldest, oldest_thresholds, "m", "1", scored_at=STAMP)
    prev_spend = np.arange(100, 0, -1, dtype=float)  # u0000 .. u0099
    prev_tiers, prev_thresholds = assign_tiers(prev_spend)
    previous = pa.table({"user_id": [f"u{i:04d}" for i in range(100)], "predicted_spend": prev_spend, "tier": prev_tiers})
    publish.publish_scores(engine, D2, previous, prev_thresholds, "m", "1", scored_at=STAMP)
    # latest: users 10..109 (10 gone, 10 new); ranking reversed
    cur_ids = [f"u{i:04d}" for i in range(10, 110)]
    cur_spend = np.arange(1, 101, dtype=float)
    cur_tiers, cur_thresholds = assign_tiers(cur_spend)
    current = pa.table({"user_id": cur_ids, "predicted_spend": cur_spend, "tier": cur_tiers})
    publish.publish_scores(engine, D3, current, cur_thresholds, "spendpred-regressor", "7", scored_at=STAMP)

    summary = report.latest_run_summary(engine, bins=8)
    assert (summary["as_of"], summary["previous_as_of"]) == ("2024-06-03", "2024-06-02")
    assert summary["user_count"] == 100
    assert summary["tier_sizes"] == {"high": 10, "medium": 30, "low": 60}
    assert summary["tier_spend"]["high"] == {"min": 91.0, "max": 100.0, "mean": 95.5}
    assert (summary["model_name"], summary["model_version"]) == ("spendpred-regressor", "7")
    assert summary["scored_at"] == "2024-06-02 03:04:05"
    assert summary["thresholds"] == [t.as_dict() for t in cur_thresholds]
    assert sum(summary["histogram"]["counts"]) == 100
    assert len(summary["histogram"]["edges"]) == 9 and summary["histogram"]["edges"][-1] == 100.0

    # expected movement computed here, independently of the SQL view
    rank = {"high": 3, "medium": 2, "low": 1}
    prev = {u: (t, s) for u, t, s in zip(previous.column("user_id").to_pylist(), prev_tiers, prev_spend)}
    expected = {"up": 0, "down": 0, "same": 0, "churn_warning": 0}
    transitions: dict[str, dict[str, int]] = {p: {c: 0 for c in rank} for p in rank}
    for user, tier, spend in zip(cur_ids, cur_tiers, cur_spend):
        if user not in prev:
            continue
        old_tier, old_spend = prev[user]
        step = rank[tier] - rank[old_tier]
        expected["up" if step > 0 else "down" if step < 0 else "same"] += 1
        expected["churn_warning"] += int(step < 0 or spend < 0.5 * old_spend)
        transitions[old_tier][tier] += 1
    movement = summary["movement"]
    assert {k: movement[k] for k in expected} == expected
    assert (movement["paired"], movement["new"], movement["gone"]) == (90, 10, 10)
    assert summary["transitions"] == transitions


def test_runs_read_back_and_a_missing_run_is_empty(engine: sa.Engine) -> None:
    assert report.latest_runs(engine) == (None, None)
    table, thresholds = _run(12, seed=3)
    publish.publish_scores(engine, D1, table, thresholds, "m", "1", scored_at=STAMP)
    publish.publish_scores(engine, D2, table, thresholds, "m", "2", scored_at=STAMP)
    assert report.latest_runs(engine) == (D2, D1)
    scores = report.read_scores(engine, D2)
    assert scores.num_rows == 12 and set(scores.column("as_of").to_pylist()) == {D2}
    assert set(scores.column("model_version").to_pylist()) == {"2"}
    assert report.read_thresholds(engine, D1) == thresholds
    assert report.read_scores(engine, D3).num_rows == 0 and report.read_thresholds(engine, D3) == []


def test_warehouse_summary_counts_the_sources(warehouse_url: str) -> None:
    from spendpred import synth

    with warehouse.opened_engine(warehouse_url) as engine:
        seeded = synth.seed_warehouse(engine, users=30, days=60, end_date=dt.date(2024, 6, 30), seed=2)
        summary = report.warehouse_summary(engine)
        assert summary["url"] == engine.url.render_as_string(hide_password=True)
    assert summary["counts"] == seeded
    assert summary["first_order"] is None or summary["first_order"] <= summary["last_order"]
    assert summary["completed_spend"] >= 0.0 and 0 <= summary["buyers"] <= 30


def test_page_data_before_anything_exists_creates_nothing(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "var")
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    data = report.page_data(url, settings)
    assert data["summary"] is None and data["champion"] is None and data["errors"] == []
    assert "does not exist yet" in data["notes"][0]
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "var").exists()
    text = report.format_report(data)
    assert "no scores published yet" in text and "champion: none yet" in text
    assert "FROM user_spend_tier_current" in text  # SQLite: unqualified names


def test_page_data_and_text_report_of_published_runs(sqlite_url: str, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "var")
    with warehouse.opened_engine(sqlite_url) as engine:
        warehouse.init_db(engine)
        spend = np.arange(1, 21, dtype=float)
        labels, thresholds = assign_tiers(spend)
        table = pa.table({"user_id": [f"u{i:02d}" for i in range(20)], "predicted_spend": spend, "tier": labels})
        publish.publish_scores(engine, D1, table, thresholds, "spendpred-regressor", "4", scored_at=STAMP)
    data = report.page_data(sqlite_url, settings)
    assert data["summary"]["as_of"] == "2024-06-01"
    # scores of version 4 but no registry here: named as a missing store, never "champion: none yet"
    assert data["registry_missing"] == str(tmp_path / "var" / "mlflow.db")
    assert data["errors"] == [f"the MLflow registry {data['registry_missing']} does not exist, yet the warehouse holds "
                              "scores of version 4: point SPENDPRED_MLFLOW_TRACKING_URI (or SPENDPRED_HOME) at the store "
                              "that registered it"]  # fmt: skip
    assert "champion: unknown (no MLflow registry at" in report.format_report(data)
    assert data["summary"]["tier_sizes"] == {"high": 2, "medium": 6, "low": 12}
    text = report.format_report({**data, "champion": {"name": "spendpred-regressor", "version": "4",
                                                      "metrics": {"normalised_gini": 0.5, "rmse": 3.0}, "tags": {"loss": "mse"}}})
    assert "latest run: as_of 2024-06-01 - 20 users scored by spendpred-regressor v4" in text
    assert re.search(r"high +2 users +predicted spend in \[19\.00, \+inf\)", text)
    assert "champion: spendpred-regressor v4 (loss mse): normalised_gini=0.500, rmse=3.000" in text
    assert data["scoring"] is None and "encoder:" not in text  # the run was not staged here

    # the staged run's encoder figures (written by assign_tiers) appear on the page and in the report
    from spendpred.files import write_json_atomic
    from spendpred.snapshot import RunFolder

    run = RunFolder.for_date("score", D1, settings)
    run.path.mkdir(parents=True)
    encoder = {"users": 20, "hits": 19, "misses": 1, "hit_rate": 0.95, "encode_seconds": 0.25, "cache": "warm", "written": 20}
    write_json_atomic(run.tiers_json, {**run.ref(), "rows": 20, "encoder": encoder})
    data = report.page_data(sqlite_url, settings)
    assert data["scoring"] == encoder
    line = "encoder: 1 of 20 users encoded in 0.2s; embedding cache warm: 19 hits (95.0% hit rate)"
    assert line in report.format_report(data)
    assert f'<p class="meta" id="scoring-cost">{line}</p>' in ui.render_page(data)


def test_page_data_reports_an_uninitialised_warehouse_as_an_error(sqlite_url: str, tmp_path: Path) -> None:
    warehouse.get_engine(sqlite_url).dispose()  # the file exists, the tables do not
    with warehouse.opened_engine(sqlite_url) as engine, engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
        conn.commit()
    data = report.page_data(sqlite_url, Settings(home=tmp_path / "var"))
    assert data["summary"] is None
    assert len(data["errors"]) == 1 and "spendpred db init" in data["errors"][0]




def test_the_champion_is_shown_beside_its_peers_with_lift_and_calibration() -> None:
    comparison = report.champion_comparison(CHAMPION)
    assert [r["model"] for r in comparison["rows"]] == ["champion", "before_finetuning", "past_spend", "gbt_numeric"]
    assert comparison["rows"][3]["normalised_gini"] == 0.66 and comparison["rows"][3]["total_ratio"] is None
    assert comparison["lift"] == {"normalised_gini": 0.012}
    assert comparison["calibration"] == {"total_predicted": 10400.0, "total_actual": 10000.0, "total_ratio": 1.04}
    assert report.champion_comparison(None) is None
    text = "\n".join(report.format_comparison(comparison))
    assert "gradient-boosted trees on the numeric features" in text and "0.660" in text
    assert "fine-tuning lift over the frozen encoder: Normalised Gini +0.0120" in text
    assert "total predicted spend 10400 vs actual 10000 (ratio 1.040)" in text
    page = ui.render_page({"warehouse": "sqlite://", "summary": None, "champion": CHAMPION, "comparison": comparison,
                           "errors": [], "notes": []})  # fmt: skip
    assert 'id="champion-vs-peers"' in page and 'data-model="gbt_numeric"' in page and "fine-tuning lift" in page


def test_the_page_says_when_the_champion_was_forced_past_the_gate(sqlite_url: str, tmp_path: Path) -> None:
    """A real registry (SQLite) whose champion was forced by 'alice' though it loses to a baseline."""
    from spendpred import registry
    from spendpred.promotion import BASELINES_TO_BEAT

    settings = Settings(home=tmp_path / "var")
    with warehouse.opened_engine(sqlite_url) as engine:
        warehouse.init_db(engine)
    client = registry.get_client(settings)
    client.create_registered_model(registry.REGISTERED_MODEL)
    (tmp_path / "bundle").mkdir()
    version = client.create_model_version(registry.REGISTERED_MODEL, source=(tmp_path / "bundle").as_uri()).version
    losing = {"normalised_gini": 0.40, "top10_capture": 0.30, "rmse": 9.0}
    ahead = {name: {"normalised_gini": 0.55, "top10_capture": 0.45} for name in BASELINES_TO_BEAT}
    registry.promote(client, version, losing, None, mode="force", actor="alice", reason="rollback", baselines=ahead)

    data = report.page_data(sqlite_url, settings)
    forced = data["forced"]
    assert forced["version"] == str(version) and forced["by"] == "alice" and forced["at"]
    assert forced["skipped_gate"].startswith("does not beat the simple baselines on the same held-out users")
    page = ui.render_page(data)
    notice = re.search(r'<div class="warn" id="forced-champion">(.*?)</div>', page)
    assert notice is not None, "no forced-champion notice on the page"
    assert f"Version {version} is champion because alice forced it on " in notice.group(1)
    assert "(promote=force), past the promotion gate." in notice.group(1)
    assert "Gate condition skipped: <span id=\"forced-gate\">does not beat the simple baselines" in notice.group(1)
    assert "normalised_gini 0.4000 vs past_spend 0.5500" in notice.group(1)

    # a champion that earned its place shows no notice
    second = client.create_model_version(registry.REGISTERED_MODEL, source=(tmp_path / "bundle").as_uri()).version
    registry.promote(client, second, {"normalised_gini": 0.6, "top10_capture": 0.5, "rmse": 9.0},
                     {"normalised_gini": 0.4, "top10_capture": 0.3, "rmse": 9.0})  # fmt: skip
    data = report.page_data(sqlite_url, settings)
    assert data["champion"]["version"] == str(second) and data["forced"] is None
    assert 'id="forced-champion"' not in ui.render_page(data)


def test_metric_labels_never_show_a_raw_key() -> None:
    from spendpred.metrics import metric_label

    assert metric_label("normalised_gini") == "Normalised Gini"
    assert metric_label("finetune_lift_top10_capture") == "Fine-tuning lift: Top-10% capture"
    assert metric_label("finetune_lift_rmse") == "Fine-tuning lift: RMSE"
    assert metric_label("high_tier_precision") == "High tier precision"  # unknown: in words
    assert metric_label("finetune_lift_") == "Finetune lift"


def test_the_health_lines_say_clock_features_drift_by_construction() -> None:
    """Tenure and recency grow with the date: their drift is shown, and said to be expected."""
    health = {"drift_as_of": "2024-06-30", "drift": [
        {"feature": "tenure_days", "status": "alert"}, {"feature": "monetary_90d", "status": "warn"},
        {"feature": "recency_days", "status": "warn"}, {"feature": "frequency_30d", "status": "ok"},
    ]}  # fmt: skip
    line = next(ln for ln in report.format_health(health) if ln.strip().startswith("drift on"))
    assert line.strip() == ("drift on 2024-06-30: 1 alert (tenure_days), 2 warn, 1 ok; recency_days, tenure_days grow "
                            "with the date (expected, never request a retrain)")  # fmt: skip
    calm = {"drift_as_of": "2024-06-30", "drift": [{"feature": "monetary_90d", "status": "warn"}]}
    assert "grow with the date" not in "\n".join(report.format_health(calm))
