"""The "Spend tiers" Airflow plugin page, served for real and opened in headless Chromium.

The plugin is loaded by Airflow's own plugins manager from ``plugins/`` and served inside
Airflow's real API server app (``airflow.api_fastapi.app.create_app``, which mounts plugin
apps with ``init_plugins``) by uvicorn on a free localhost port: the ``served_airflow``
fixture of ``test_ui_auth.py``, with the real ``SimpleAuthManager``. The browser is logged
in as the ``analyst`` user (viewer): the token comes from the auth manager's login endpoint
and is given to Chromium as the ``_token`` session cookie the Airflow UI uses, so the page
is fetched exactly as the UI's same-origin iframe fetches it. The warehouse is a SQLite file
with two published runs (written by ``spendpred.publish.publish_scores``) reached through
the Airflow connection ``spendpred_warehouse``; the champion lives in a real MLflow
registry. Chromium (Debian package ``chromium``) renders the page; the DOM is checked and
the screenshot is saved under ``test-artifacts/``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from spendpred import publish, tiers, warehouse
from tests.e2e.test_ui_auth import ServedAirflow, served_airflow

__all__ = ["served_airflow"]  # the fixture, shared with test_ui_auth.py

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHAMPION_METRICS = {"rmse": 41.25, "mae": 18.5, "spearman": 0.6123, "normalised_gini": 0.7345, "top10_capture": 0.4421}

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]


def _require_chromium() -> str:
    if CHROMIUM:
        return CHROMIUM
    if os.environ.get("SPENDPRED_REQUIRE_CHROMIUM", "") in {"1", "true", "yes"}:
        pytest.fail("chromium is not installed (SPENDPRED_REQUIRE_CHROMIUM=1): apt-get install -y chromium")
    pytest.skip("chromium is not installed: `apt-get install -y chromium` to run the browser test")


def _publish_run(engine: sa.Engine, as_of: dt.date, spend: np.ndarray, version: str) -> dict[str, int]:
    labels, thresholds = tiers.assign_tiers(spend)
    table = pa.table(
        {
            "user_id": pa.array([f"u{i:04d}" for i in range(spend.size)]),
            "predicted_spend": pa.array(spend, pa.float64()),
            "tier": pa.array([str(t) for t in labels]),
        }
    )
    publish.publish_scores(engine, as_of, table, thresholds, "spendpred-regressor", version)
    return {t: int((np.asarray(labels) == t).sum()) for t in tiers.TIERS}


@pytest.fixture
def published_warehouse(tmp_path: Path) -> tuple[str, dict[str, int]]:
    """A SQLite warehouse with two runs (2024-06-29 and 2024-06-30); returns (url, latest tier sizes)."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = warehouse.get_engine(url)
    warehouse.init_db(engine)
    rng = np.random.default_rng(7)
    first = np.where(rng.random(240) < 0.3, 0.0, rng.lognormal(4.0, 1.2, 240))
    second = np.clip(first * rng.lognormal(0.0, 0.4, 240), 0.0, None)
    _publish_run(engine, dt.date(2024, 6, 29), first, "1")
    sizes = _publish_run(engine, dt.date(2024, 6, 30), second, "2")
    engine.dispose()
    return url, sizes


@pytest.fixture
def champion_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real MLflow registry (SQLite) whose champion is version 2 with test metrics; returns the version."""
    from spendpred import registry

    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = registry.get_client()
    client.create_registered_model(registry.REGISTERED_MODEL)
    source = tmp_path / "bundle"
    source.mkdir()
    for _ in range(2):
        version = client.create_model_version(registry.REGISTERED_MODEL, source=source.as_uri()).version
    client.set_registered_model_alias(registry.REGISTERED_MODEL, registry.CHAMPION, str(version))
    for key, value in CHAMPION_METRICS.items():
        client.set_model_version_tag(registry.REGISTERED_MODEL, str(version), f"{registry.METRIC_TAG_PREFIX}{key}", repr(value))
    return str(version)


def _chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = _require_chromium()
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--no-proxy-server", f"--user-data-dir={profile}", "--window-size=1280,1000",
        *args, url,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


def _render(url: str, tmp_path: Path, screenshot_name: str) -> str:
    """Return the DOM Chromium rendered for ``url`` and save its screenshot as an artifact.

    Each Chromium run starts with a fresh profile (no cookies): pass a
    ``ServedAirflow.browser_login_url`` to open the page as a logged-in user.
    """
    dom = _chromium(url, tmp_path, "--dump-dom").stdout
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot_name
    shot.unlink(missing_ok=True)
    _chromium(url, tmp_path, f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no usable screenshot at {shot}"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return dom


def test_plugin_registers_page_and_external_view(airflow_db: Path) -> None:
    """Airflow loads the plugin from plugins/ with its FastAPI app and a valid external view."""
    from airflow import plugins_manager
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    assert not plugins_manager.get_import_errors()
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [a["url_prefix"] for a in apps if a["name"] == "spendpred tiers"] == ["/spendpred"]
    info = {p["name"]: p for p in plugins_manager.get_plugin_info()}
    views = info["spendpred_ui"]["external_views"]
    assert [v["name"] for v in views] == ["Spend tiers"]
    view = ExternalViewResponse.model_validate(views[0])
    assert view.href == "spendpred/" and not view.href.startswith("/") and view.url_route == "spend-tiers"


def test_page_renders_latest_run_in_chromium(
    published_warehouse: tuple[str, dict[str, int]],
    champion_registry: str,
    served_airflow: ServedAirflow,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tier sizes, thresholds, chart, movement and champion appear in the rendered page."""
    url, sizes = published_warehouse
    # The warehouse comes from the Airflow connection; the settings fallback points elsewhere.
    monkeypatch.setenv("AIRFLOW_CONN_SPENDPRED_WAREHOUSE", "sqlite:///" + url.removeprefix("sqlite:///"))
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'missing.db'}")

    login = served_airflow.browser_login_url(served_airflow.login("analyst"))
    dom = _render(login, tmp_path, "spend_tiers_page.png")

    assert 'id="as-of">2024-06-30<' in dom
    for tier, users in sizes.items():
        assert re.search(rf'data-tier-size="{tier}">{users:,}<', dom), f"{tier} size {users} not shown"
    assert sum(sizes.values()) == 240
    assert f'id="champion-version">{champion_registry}<' in dom
    assert "Normalised Gini" in dom and "0.7345" in dom
    assert dom.count("<rect ") == 20  # one bar per histogram bin
    assert 'data-tier="high"' in dom and 'data-tier="low"' in dom
    assert 'id="transitions"' in dom and "From 2024-06-29 to 2024-06-30" in dom
    assert 'class="error"' not in dom and "missing.db" not in dom
    assert "<script" not in dom.lower()


def _store_model_health(url: str) -> None:
    """What a month of nightly monitoring leaves: a matured partition's realized metrics (champion and
    baselines), the latest night's drift, an estimate beside its realized value and a retrain request."""
    from spendpred import monitoring

    engine = warehouse.get_engine(url)
    try:
        as_of = dt.date(2024, 6, 29)
        table = {
            "model": {"normalised_gini": (0.6123, 0.55, 0.67), "top10_capture": (0.41, 0.35, 0.47), "total_ratio": (1.79, 1.6, 2.0),
                      "rmse": (52.5, 40.0, 60.0)},
            "past_spend": {"normalised_gini": (0.4567, 0.4, 0.5), "top10_capture": (0.3, 0.25, 0.35), "total_ratio": (0.9, 0.8, 1.0)},
            "bgnbd_gamma_gamma": {"normalised_gini": (0.5432, 0.5, 0.6), "top10_capture": (0.38, 0.3, 0.4), "total_ratio": (1.1, 1.0, 1.2)},
        }  # fmt: skip
        monitoring.store_partition_metrics(engine, as_of, 1, monitoring.metric_rows(as_of, "1", 1, table))
        monitoring.store_drift(engine, dt.date(2024, 6, 30), "2", [
            {"feature": "monetary_90d", "psi": 2.5, "statistic": 0.8, "status": "alert"},
            {"feature": "tenure_days", "psi": 0.15, "statistic": 0.1, "status": "warn"},
            {"feature": "frequency_90d", "psi": 0.01, "statistic": 0.02, "status": "ok"},
        ])  # fmt: skip
        monitoring.store_estimates(engine, as_of, "1", 1, {"rmse": 48.75, "mae": 20.0, "users": 240})
        monitoring.store_request(engine, dt.date(2024, 6, 30), "2", "requested", ["drift alert on monetary_90d (max PSI 2.50)"],
                                 dt.date(2024, 7, 6))  # fmt: skip
    finally:
        engine.dispose()


def test_page_shows_model_health_in_chromium(
    published_warehouse: tuple[str, dict[str, int]],
    champion_registry: str,
    served_airflow: ServedAirflow,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model-health section (issue 24): realized metrics per matured as_of for the champion and the
    baselines with their plot, tonight's drift with its status, estimate vs realized, the retrain request."""
    url, _ = published_warehouse
    _store_model_health(url)
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", url)

    login = served_airflow.browser_login_url(served_airflow.login("analyst"))
    dom = _render(login, tmp_path, "spend_tiers_model_health.png")

    assert 'id="model-health"' in dom and 'id="health-plot"' in dom
    for scorer, gini in (("model", "0.612"), ("past_spend", "0.457"), ("bgnbd_gamma_gamma", "0.543")):
        assert re.search(rf'data-as-of="2024-06-29" data-scorer="{scorer}">.*?<td>{gini}', dom), scorer
    assert "1.790" in dom  # predicted / actual of the champion
    assert re.search(r'data-feature="monetary_90d" data-status="alert"', dom)
    assert re.search(r'data-feature="tenure_days" data-status="warn"', dom)
    assert re.search(r'data-metric="rmse"><td>2024-06-29</td><td>1</td><td>RMSE</td><td>48.75</td><td>52.50</td>', dom)
    assert 'id="health-request">2024-06-30<' in dom and "drift alert on monetary_90d" in dom
    assert 'class="error"' not in dom and "<script" not in dom.lower()


def test_page_shows_empty_state_before_any_run(
    served_airflow: ServedAirflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an initialised but empty warehouse and no registry the page says what to run."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = warehouse.get_engine(url)
    warehouse.init_db(engine)
    engine.dispose()
    monkeypatch.delenv("AIRFLOW_CONN_SPENDPRED_WAREHOUSE", raising=False)
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", url)
    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-mlflow.db'}")

    login = served_airflow.browser_login_url(served_airflow.login("analyst"))
    dom = _render(login, tmp_path, "spend_tiers_empty.png")

    assert 'id="empty-state"' in dom and "No scores published yet." in dom
    assert "No champion model yet" in dom
    assert 'class="error"' not in dom
    assert not (tmp_path / "no-mlflow.db").exists(), "reading the page must not create an MLflow store"


def test_anonymous_browser_gets_the_login_page_not_the_data(
    published_warehouse: tuple[str, dict[str, int]],
    served_airflow: ServedAirflow,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opening the page without logging in lands on Airflow's login page; no tier data is shown."""
    url, _ = published_warehouse
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", url)

    dom = _render(served_airflow.page, tmp_path, "spend_tiers_anonymous.png")

    assert "data-tier-size" not in dom and 'id="as-of"' not in dom and "2024-06-30" not in dom
    assert "<form" in dom.lower() and 'type="password"' in dom, "the auth manager's login form is not shown"


def test_airflow_ui_shows_the_page_in_its_iframe_for_a_logged_in_user(
    published_warehouse: tuple[str, dict[str, int]],
    served_airflow: ServedAirflow,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Browse > Spend tiers in the real Airflow UI: the iframe's request carries the session cookie and is served."""
    url, _ = published_warehouse
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", url)
    login = served_airflow.browser_login_url(served_airflow.login("analyst"), next_path="/plugin/spend-tiers")
    served_airflow.answered.clear()

    dom = _chromium(login, tmp_path, "--dump-dom", "--virtual-time-budget=20000").stdout

    assert re.search(r'<iframe[^>]+src="[^"]*spendpred/"', dom), dom[-3000:]
    page_requests = [(status, cookie) for path, status, cookie in served_airflow.answered if path == "/spendpred/"]
    assert page_requests == [(200, True)], served_airflow.answered
    refused = [answer for answer in served_airflow.answered if answer[1] in (401, 403)]
    assert not refused, f"the logged-in UI was refused: {refused}"
    shot = ARTIFACTS / "spend_tiers_in_airflow_ui.png"
    shot.unlink(missing_ok=True)
    _chromium(login, tmp_path, f"--screenshot={shot}", "--virtual-time-budget=20000")
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no usable screenshot at {shot}"
