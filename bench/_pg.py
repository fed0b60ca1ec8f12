"""A throwaway PostgreSQL database for the benchmarks (imported by the bench scripts).

The admin URL comes from ``SPENDPRED_BENCH_PG_URL`` (default
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``) and needs CREATE DATABASE rights.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Throwaway:
    """A created database: its ``name``, its ``url`` (password kept), the server version, the admin engine."""

    name: str
    url: str
    server_version: str
    admin: sa.Engine


def admin_url() -> str:
    """Return the admin URL the benchmarks create their databases next to."""
    return os.environ.get("SPENDPRED_BENCH_PG_URL", DEFAULT_ADMIN_URL)


@contextmanager
def throwaway_database(prefix: str, keep: bool = False) -> Iterator[Throwaway]:
    """Create ``<prefix>_<random>`` next to the admin URL's database; drop it on exit unless ``keep``."""
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            server = conn.exec_driver_sql("SHOW server_version").scalar_one()
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
        try:
            yield Throwaway(name, url, server, admin)
        finally:
            if keep:
                logging.info("kept database %s", name)
            else:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
