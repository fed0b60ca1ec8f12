"""Airflow 3 plugin: the "Spend tiers" page in the Airflow UI.

Wiring only. A FastAPI app mounted by the API server under ``/spendpred`` serves the page
built by ``spendpred.ui`` (``/spendpred/`` HTML, ``/spendpred/summary.json`` the same data as
JSON); an external view adds "Spend tiers" to the UI's Browse menu and shows that page in
an iframe. The warehouse is the Airflow connection ``spendpred_warehouse`` when it exists,
else ``SPENDPRED_WAREHOUSE_URL``; the model registry is ``SPENDPRED_MLFLOW_TRACKING_URI``.

The page shows aggregates only (tier sizes, thresholds, a histogram, model metrics), never
user ids. Like every FastAPI plugin app it is not behind Airflow's authentication; put the
API server behind your usual access control if even aggregates are sensitive.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

URL_PREFIX = "/spendpred"
WAREHOUSE_CONN_ID = "spendpred_warehouse"


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


def create_app() -> FastAPI:
    """Return the FastAPI app that serves the page (mounted under ``/spendpred``)."""
    app = FastAPI(title="spendpred tiers", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def spend_tiers_page() -> HTMLResponse:
        """The Spend tiers page (HTML)."""
        from spendpred import ui

        return HTMLResponse(ui.render_page(ui.page_data(warehouse_url())), headers={"Cache-Control": "no-store"})

    @app.get("/summary.json")
    def spend_tiers_summary() -> JSONResponse:
        """The same data as JSON."""
        from spendpred import ui

        return JSONResponse(ui.page_data(warehouse_url()), headers={"Cache-Control": "no-store"})

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
