"""The "Spend tiers" plugin page requires an Airflow user, like the rest of the API server.

The app under test is Airflow's real API server app (``airflow.api_fastapi.app.create_app``:
the plugin mounted by ``init_plugins``, the auth manager's ``/auth`` app, the core API and
UI, ``JWTRefreshMiddleware``), served by uvicorn on a free localhost port. The auth manager is
the real ``SimpleAuthManager`` with two users: ``analyst`` (role ``viewer``) and ``norole``
(no role, so no access to anything). Tokens are real JWTs: from the auth manager's own login
endpoint (``POST /auth/token``), or signed by the auth manager (``generate_jwt``) for the
expired case. Nothing in the authentication is mocked.

``served_airflow`` is also used by ``test_ui_page.py`` (the page rendered in Chromium).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from spendpred import warehouse

# The warning is about the JWT secret Airflow generates for a config without one (as here).
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")]

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
PASSWORDS = {"analyst": "analyst-pw-4F7q", "norole": "norole-pw-9Kd2"}
USERS = "analyst:viewer,norole:"
SESSION_ROUTE = "/_test/session"


@dataclass(frozen=True)
class ServedAirflow:
    """The running API server: its base URL (no trailing slash) and the answers it gave.

    ``answered`` lists ``(path, status, had _token cookie)`` for every HTTP request, in order.
    """

    base: str
    answered: list[tuple[str, int, bool]] = field(default_factory=list)

    @property
    def page(self) -> str:
        return f"{self.base}/spendpred/"

    @property
    def summary(self) -> str:
        return f"{self.base}/spendpred/summary.json"

    def login(self, username: str) -> str:
        """Log in through the auth manager's own endpoint; return the JWT it issues."""
        response = httpx.post(f"{self.base}/auth/token", json={"username": username, "password": PASSWORDS[username]})
        assert response.status_code == 201, response.text
        return response.json()["access_token"]

    def browser_login_url(self, token: str, next_path: str = "/spendpred/") -> str:
        """A URL that gives a browser the ``_token`` cookie (as Airflow's login does), then opens ``next_path``."""
        return f"{self.base}{SESSION_ROUTE}?{httpx.QueryParams({'token': token, 'next': next_path})}"


def _with_session_route(airflow_app: Any, answered: list[tuple[str, int, bool]]) -> Any:
    """Wrap the API server app with one test-only route that sets the UI's session cookie.

    A headless browser cannot fill in the login form, so ``GET /_test/session?token=..&next=..``
    sets the ``_token`` cookie with the attributes Airflow's own login redirect uses
    (``login_all_admins`` in the simple auth manager's routes) and redirects to ``next``.
    Every other request goes to the real app untouched; its answer's status is recorded.
    """
    from starlette.requests import Request
    from starlette.responses import RedirectResponse

    from airflow.api_fastapi.app import get_cookie_path
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await airflow_app(scope, receive, send)
            return
        if scope["path"] == SESSION_ROUTE:
            request = Request(scope, receive)
            response = RedirectResponse(request.query_params["next"], status_code=307)
            response.set_cookie(
                COOKIE_NAME_JWT_TOKEN, request.query_params["token"],
                path=get_cookie_path(), httponly=True, samesite="lax",
            )  # fmt: skip
            await response(scope, receive, send)
            return
        has_cookie = f"{COOKIE_NAME_JWT_TOKEN}=".encode() in dict(scope["headers"]).get(b"cookie", b"")

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answered.append((scope["path"], message["status"], has_cookie))
            await send(message)

        await airflow_app(scope, receive, recording_send)

    return app


@pytest.fixture(scope="module")
def served_airflow(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedAirflow]:
    """Serve Airflow's API server app (with the plugin) and the simple auth manager's two test users."""
    import uvicorn

    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app, purge_cached_app

    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH_MANAGER)
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", USERS)
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        assert not plugins_manager.get_import_errors(), plugins_manager.get_import_errors()
        purge_cached_app()
        app = create_app("core")
        answered: list[tuple[str, int, bool]] = []
        server = uvicorn.Server(
            uvicorn.Config(
                _with_session_route(app, answered), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield ServedAirflow(f"http://127.0.0.1:{port}", answered)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            purge_cached_app()


@pytest.fixture
def empty_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An initialised, empty SQLite warehouse as SPENDPRED_WAREHOUSE_URL, no MLflow registry; returns its URL."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = warehouse.get_engine(url)
    warehouse.init_db(engine)
    engine.dispose()
    monkeypatch.delenv("AIRFLOW_CONN_SPENDPRED_WAREHOUSE", raising=False)
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", url)
    monkeypatch.setenv("SPENDPRED_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-mlflow.db'}")
    return url


def _get(url: str, *, token: str | None = None, cookie: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    cookies = {"_token": cookie} if cookie is not None else None
    with httpx.Client(cookies=cookies, follow_redirects=False) as client:
        return client.get(url, headers=headers)


def _assert_no_data(response: httpx.Response) -> None:
    body = response.text
    for leak in ("warehouse.db", "summary", "tier", "champion", "as_of"):
        assert leak not in body, f"{leak!r} in a refused answer: {body[:300]}"


def _assert_sent_to_login(served: ServedAirflow, response: httpx.Response) -> None:
    """The page answered with Airflow's login redirect (``/api/v2/auth/login?next=/spendpred/``)."""
    assert response.status_code == 307, (response.status_code, response.text[:300])
    location = urlsplit(response.headers["location"])
    assert location.path == "/api/v2/auth/login"
    assert parse_qs(location.query) == {"next": ["/spendpred/"]}
    assert response.headers["cache-control"] == "no-store"
    _assert_no_data(response)
    # Airflow accepts the next URL and hands over to the auth manager's login page, coming back here.
    onward = _get(served.base + response.headers["location"])
    assert onward.status_code == 307, onward.text
    assert onward.headers["location"] == "/auth/login?next=%2Fspendpred%2F"


def _forged(token: str) -> str:
    """``token`` with its claims changed to role admin, keeping the original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _expired() -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username="analyst", role="viewer")
    return get_auth_manager().generate_jwt(user, expiration_time_in_seconds=-3600)


def test_anonymous_requests_are_refused_like_the_rest_api(served_airflow: ServedAirflow, empty_warehouse: str) -> None:
    """No token: the JSON answers 401 as /api/v2 does; the HTML page sends the browser to log in."""
    api = _get(f"{served_airflow.base}/api/v2/dags")
    assert api.status_code == 401 and api.json() == {"detail": "Not authenticated"}

    summary = _get(served_airflow.summary)
    assert summary.status_code == 401 and summary.json() == {"detail": "Not authenticated"}
    _assert_no_data(summary)

    _assert_sent_to_login(served_airflow, _get(served_airflow.page))


@pytest.mark.parametrize("kind", ["garbage", "forged", "expired", "revoked"])
def test_unusable_tokens_are_refused(served_airflow: ServedAirflow, empty_warehouse: str, kind: str) -> None:
    """Garbage, forged-signature, expired and logged-out tokens get no data, as header or cookie."""
    from airflow.api_fastapi.app import get_auth_manager

    if kind == "garbage":
        token = "not-a-jwt"
    elif kind == "forged":
        token = _forged(served_airflow.login("norole"))
    elif kind == "expired":
        token = _expired()
    else:
        token = served_airflow.login("analyst")
        assert _get(served_airflow.summary, token=token).status_code == 200
        get_auth_manager().revoke_token(token)  # what /api/v2/auth/logout does
    expected = 401 if kind == "expired" else 403

    # An API client (Authorization header) gets the same error as from /api/v2, for both routes.
    api = _get(f"{served_airflow.base}/api/v2/dags", token=token)
    assert api.status_code == expected, api.text
    for url in (served_airflow.summary, served_airflow.page):
        response = _get(url, token=token)
        assert response.status_code == expected and response.json() == api.json(), (url, response.text)

    # The UI's session cookie: JSON refused; the page sends the browser to log in again; the
    # stale cookie is cleared (JWTRefreshMiddleware), so no redirect loop.
    summary = _get(served_airflow.summary, cookie=token)
    assert summary.status_code == expected and summary.json() == api.json()
    page = _get(served_airflow.page, cookie=token)
    _assert_sent_to_login(served_airflow, page)
    assert page.headers["set-cookie"].startswith('_token=""') and "Max-Age=0" in page.headers["set-cookie"]


@pytest.mark.parametrize("via", ["header", "cookie"])
def test_logged_in_user_is_served(served_airflow: ServedAirflow, empty_warehouse: str, via: str) -> None:
    """A user with read access to the spendpred DAG runs gets the page and the data."""
    token = served_airflow.login("analyst")
    credentials: dict[str, Any] = {"token": token} if via == "header" else {"cookie": token}

    summary = _get(served_airflow.summary, **credentials)
    assert summary.status_code == 200, summary.text
    data = summary.json()
    assert data["warehouse"] == empty_warehouse and data["errors"] == []
    assert data["summary"]["as_of"] is None and data["summary"]["user_count"] == 0
    assert data["champion"] is None

    page = _get(served_airflow.page, **credentials)
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert 'id="empty-state"' in page.text and 'class="error"' not in page.text


def test_user_without_dag_access_is_forbidden(served_airflow: ServedAirflow, empty_warehouse: str) -> None:
    """An authenticated user who may not read the spendpred DAG runs gets 403 and no data."""
    token = served_airflow.login("norole")
    for credentials in ({"token": token}, {"cookie": token}):
        summary = _get(served_airflow.summary, **credentials)
        assert summary.status_code == 403 and summary.json() == {"detail": "Forbidden"}
        page = _get(served_airflow.page, **credentials)
        assert page.status_code == 403 and 'id="forbidden"' in page.text
        assert "spendpred_nightly_scoring" in page.text and "empty-state" not in page.text
        _assert_no_data(summary)
