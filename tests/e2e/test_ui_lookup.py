"""The Spend tiers page after a real retrain and night (issue 25, items 4-5): the champion's global importance
(logged by the retrain to MLflow) and the one-user lookup (prediction, tier, reasons, attribution table), opened
in headless Chromium behind Airflow's login like ``test_ui_page.py``; an unknown user gets one clear line."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from spendpred import explain, pipeline, registry
from spendpred.snapshot import RunFolder
from tests.e2e.test_ui_auth import ServedAirflow, served_airflow
from tests.e2e.test_ui_page import _render
from tests.tiny_bert import make_tiny_bert

__all__ = ["served_airflow"]

RUN_DATE = dt.date(2024, 6, 30)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]


@pytest.fixture
def scored_night(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A retrained champion (tiny BERT) and one published night with reasons; returns the warehouse URL."""
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(make_tiny_bert(tmp_path / "tiny-bert")))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_SPENDPRED_WAREHOUSE", raising=False)
    pipeline.seed(users=300, days=400, end_date=RUN_DATE, seed=7, url=sqlite_url)
    pipeline.train(RUN_DATE, epochs=1, promote="force", url=sqlite_url)
    pipeline.score(RUN_DATE, url=sqlite_url)
    return sqlite_url


def test_page_shows_global_importance_and_explains_one_user(
    scored_night: str, served_airflow: ServedAirflow, tmp_path: Path
) -> None:
    # the retrain logged the table and the plot with its evaluation
    champion = registry.champion_info()
    artifacts = {a.path for a in registry.get_client().list_artifacts(champion["run_id"], "evaluation")}
    assert {f"evaluation/{explain.IMPORTANCE_TABLE}", f"evaluation/{explain.IMPORTANCE_PLOT}"} <= artifacts

    run = RunFolder.for_date("score", RUN_DATE)
    tiers = pq.read_table(run.tiers_parquet).to_pandas().set_index("user_id")
    user = str(tiers.index[tiers["tier"] == "high"][0])
    token = served_airflow.login("analyst")
    dom = _render(served_airflow.browser_login_url(token, f"/spendpred/?user={user}"), tmp_path, "spend_tiers_lookup.png")

    assert 'id="importance-feature"' in dom and 'data-importance="text"' in dom and 'id="importance-kind"' in dom
    assert 'id="lookup-result"' in dom and f"<strong>{user}</strong>" in dom
    assert re.search(r'id="lookup-tier">high<', dom)
    reasons = re.findall(r"<li>(.*?)</li>", dom.split('id="lookup-reasons"')[1].split("</ol>")[0])
    expected = pipeline.explain_user(user)  # the same explanation `spendpred explain` prints
    assert [html.unescape(r) for r in reasons] == [r["reason"] for r in expected["reasons"]] and len(reasons) == 3
    table = dom.split('id="lookup-attributions"')[1].split("</table>")[0]
    assert "(baseline)" in table and "(prediction)" in table and table.count("<tr>") == len(expected["attributions"]) + 1
    assert 'class="error"' not in dom and "<script" not in dom.lower()

    dom = _render(served_airflow.browser_login_url(token, "/spendpred/?user=nobody"), tmp_path, "spend_tiers_lookup_unknown.png")
    error = re.search(r'id="lookup-error">(.*?)</div>', dom)
    assert error and "user 'nobody' is not in the scoring snapshot as of 2024-06-30" in html.unescape(error.group(1))
    assert "Traceback" not in dom and 'id="lookup-result"' not in dom and 'id="as-of"' in dom  # the rest of the page stays

    # behind the same login: an anonymous request for a lookup is sent to log in, and learns nothing
    anonymous = httpx.get(f"{served_airflow.page}?user={user}", follow_redirects=False)
    assert anonymous.status_code == 307 and "/auth/login" in anonymous.headers["location"] and user not in anonymous.text


def test_lookup_refuses_bad_ids_in_one_line(scored_night: str) -> None:
    from spendpred.pipeline.nightly import LOOKUP_ID_CHARS, explain_lookup

    assert explain_lookup("   ") == {"user_id": "", "error": "enter a user id to explain"}
    long = explain_lookup("x" * (LOOKUP_ID_CHARS + 1))
    assert "at most 64 printable characters" in long["error"] and len(long["user_id"]) == LOOKUP_ID_CHARS
    assert "printable" in explain_lookup("u1\n2")["error"]
    unknown = explain_lookup("u'; DROP TABLE x")
    assert "is not in the scoring snapshot" in unknown["error"] and "\n" not in unknown["error"]
