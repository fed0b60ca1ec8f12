"""Airflow 3 plugin: the "Spend tiers" page in the Airflow UI.

Wiring only. A FastAPI app mounted by the API server under ``/spendpred`` serves the page
built by ``spendpred.ui`` (``/spendpred/`` HTML, ``/spendpred/summary.json`` the same data as
JSON); an external view adds "Spend tiers" to the UI's Browse menu and shows that page in
an iframe. The warehouse is the Airflow connection ``spendpred_warehouse`` when it exists,
else ``SPENDPRED_WAREHOUSE_URL``; the model registry is ``SPENDPRED_MLFLOW_TRACKING_URI``.

What the page shows is computed from the per-user scores of the latest runs: tier sizes,
thresholds, a spend histogram, tier movement between runs, model metrics and the warehouse
URL (password hidden). It lists no user ids, but it is business data, so both routes sit
behind Airflow's own authentication and authorization, whichever auth manager is configured
(``SimpleAuthManager`` in ``airflow standalone`` and docker-compose, FAB, Keycloak, ...):

* Authentication is Airflow's ``airflow.api_fastapi.core_api.security.get_user``, the same
  dependency that guards ``/api/v2``: the JWT comes from the ``Authorization: Bearer``
  header, else from the ``_token`` cookie the Airflow UI sets at login (the UI's iframe is
  same-origin, so the browser sends it), and is checked by the configured auth manager
  (``airflow.api_fastapi.app.get_auth_manager()``, a process-wide singleton, so it works
  in this sub-application, which has no ``app.state.auth_manager`` of its own).
* Authorization is Airflow's ``requires_access_dag("GET", DagAccessEntity.RUN, dag_id)``
  for both spendpred DAGs (``SPENDPRED_DAG_IDS``): the page shows what their runs wrote
  (scores from ``spendpred_nightly_scoring``, the champion from ``spendpred_weekly_retrain``),
  so a user who may read those DAGs' runs may read the page. With FAB this is "can read" on
  both DAGs and on DAG Runs (the Viewer role has it); with SimpleAuthManager every role
  from ``viewer`` up has it, and a user without a role does not.

Without a usable token (none, expired or invalid) ``summary.json`` answers 401/403 like
``/api/v2`` does, and the HTML page redirects (307) to ``/api/v2/auth/login?next=<page>``,
the redirect the Airflow UI itself makes, so a browser lands on the login page and comes
back to the page. A request that sent an ``Authorization`` header gets the 401/403 instead
of the redirect. An authenticated user without that access gets 403 (the HTML page says why).
Airflow's API-server modules are imported per request, not when the plugin is imported
(every task process imports every plugin).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

URL_PREFIX = "/spendpred"
WAREHOUSE_CONN_ID = "spendpred_warehouse"
# The DAGs whose runs produce what the page shows; reading the page needs read access to their runs.
SPENDPRED_DAG_IDS = ("spendpred_nightly_scoring", "spendpred_weekly_retrain")
NO_STORE = {"Cache-Control": "no-store"}


def connection_url(conn: Any) -> str | None:
    """Return a SQLAlchemy URL for an Airflow connection object, else ``None`` (unsupported type)."""
    from spendpred.errors import ConfigError
    from spendpred.warehouse import url_from_connection

    try:
        return url_from_connection(conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema, conn.extra_dejson)
    except ConfigError as exc:
        log.warning("%s; using SPENDPRED_WAREHOUSE_URL", exc)
        return None


def warehouse_url() -> str | None:
    """Return the warehouse URL from the ``spendpred_warehouse`` connection, or ``None`` to fall back."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return connection_url(Connection.get_connection_from_secrets(WAREHOUSE_CONN_ID))
    except AirflowNotFoundException:
        return None
    except Exception:  # noqa: BLE001 - a broken secrets backend must not take the page down
        log.warning("cannot look up connection %s; using SPENDPRED_WAREHOUSE_URL", WAREHOUSE_CONN_ID, exc_info=True)
        return None


# -- authentication and authorization ---------------------------------------------------------


class LoginRequired(Exception):
    """A browser asked for the HTML page without a usable Airflow session: send it to log in."""


class PageForbidden(Exception):
    """An authenticated user may not read the spendpred DAG runs: the page says so (403)."""


async def airflow_user(request: Request) -> Any:
    """Return the Airflow user behind the request, as ``/api/v2`` does; else raise 401/403.

    Airflow's own ``get_user``: the ``Authorization: Bearer`` JWT, else the ``_token`` cookie
    (or the user ``JWTRefreshMiddleware`` already resolved from it), validated by the
    configured auth manager. 401 when there is no token or it expired, 403 when it is invalid.
    """
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, _oauth_token=None, bearer_credentials=await bearer_scheme(request))


def _needs_login(request: Request, exc: HTTPException) -> bool:
    """Whether the Airflow UI would send this request to the login page (no API client token)."""
    if "authorization" in request.headers:
        return False
    return exc.status_code == status.HTTP_401_UNAUTHORIZED or (
        exc.status_code == status.HTTP_403_FORBIDDEN and exc.detail == "Invalid JWT token"
    )


async def page_user(request: Request) -> Any:
    """``airflow_user`` for the HTML page: a browser without a usable session is sent to log in."""
    try:
        return await airflow_user(request)
    except HTTPException as exc:
        if _needs_login(request, exc):
            raise LoginRequired from exc
        raise


def require_spendpred_read(request: Request, user: Any) -> None:
    """Raise 403 unless ``user`` may read the runs of every DAG in ``SPENDPRED_DAG_IDS``."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    for dag_id in SPENDPRED_DAG_IDS:
        requires_access_dag("GET", DagAccessEntity.RUN, dag_id)(request, user)


def page_reader(request: Request, user: Any = Depends(page_user)) -> Any:
    """Dependency of the HTML page: an authenticated user allowed to read the spendpred DAG runs."""
    try:
        require_spendpred_read(request, user)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_403_FORBIDDEN:
            raise PageForbidden from exc
        raise
    return user


def api_reader(request: Request, user: Any = Depends(airflow_user)) -> Any:
    """Dependency of ``summary.json``: an authenticated user allowed to read the spendpred DAG runs."""
    require_spendpred_read(request, user)
    return user


def login_redirect(request: Request, exc: Exception) -> RedirectResponse:
    """Redirect to Airflow's login (``/api/v2/auth/login``), coming back to this page afterwards."""
    from airflow.api_fastapi.app import API_ROOT_PATH

    next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = f"{API_ROOT_PATH}api/v2/auth/login?{urlencode({'next': next_url})}"
    return RedirectResponse(login, status_code=status.HTTP_307_TEMPORARY_REDIRECT, headers=NO_STORE)


def forbidden_page(request: Request, exc: Exception) -> HTMLResponse:
    """The 403 answer of the HTML page (shown in the UI's iframe, so HTML rather than JSON)."""
    dags = " and ".join(f"<code>{dag_id}</code>" for dag_id in SPENDPRED_DAG_IDS)
    body = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Spend tiers: forbidden</title></head>'
        f'<body><p id="forbidden">Forbidden: this page shows what the runs of {dags} wrote, and your Airflow '
        "user may not read those runs. Ask an Airflow admin for read access to these DAGs and their runs.</p>"
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status.HTTP_403_FORBIDDEN, headers=NO_STORE)


# -- the app -----------------------------------------------------------------------------------


def create_app() -> FastAPI:
    """Return the FastAPI app that serves the page (mounted under ``/spendpred``)."""
    app = FastAPI(title="spendpred tiers", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(LoginRequired, login_redirect)
    app.add_exception_handler(PageForbidden, forbidden_page)

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(page_reader)])
    def spend_tiers_page(user: str | None = None) -> HTMLResponse:
        """The Spend tiers page (HTML); ``?user=ID`` adds that user's explanation (``pipeline.explain_lookup``)."""
        from spendpred import report, ui

        data = report.page_data(warehouse_url())
        if user is not None:
            from spendpred.pipeline.nightly import explain_lookup

            data["lookup"] = explain_lookup(user)
        return HTMLResponse(ui.render_page(data), headers=NO_STORE)

    @app.get("/summary.json", dependencies=[Depends(api_reader)])
    def spend_tiers_summary() -> JSONResponse:
        """The same data as JSON."""
        from spendpred import report

        return JSONResponse(report.page_data(warehouse_url()), headers=NO_STORE)

    return app


app = create_app()


class SpendpredUIPlugin(AirflowPlugin):
    """Adds the "Spend tiers" page (FastAPI app + external view) to the Airflow UI."""

    name = "spendpred_ui"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "spendpred tiers"}]
    external_views = [
        {
            "name": "Spend tiers",
            "href": "spendpred/",
            "url_route": "spend-tiers",
            "destination": "nav",
            "category": "browse",
        }
    ]
