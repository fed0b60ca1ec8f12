"""The ``spendpred`` command line: a thin front end over :mod:`spendpred.pipeline`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from spendpred.errors import SpendpredError

app = typer.Typer(
    help="Purchasing-power scoring: warehouse, snapshots, training, scoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Warehouse schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("alembic", "mlflow", "great_expectations", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@db_app.command("init")
def db_init(url: Annotated[str | None, typer.Option(help="Warehouse URL (default: SPENDPRED_WAREHOUSE_URL or SQLite under var/).")] = None) -> None:
    """Create the source relations, output tables and views (idempotent)."""
    from spendpred import pipeline

    _echo_json(pipeline.init_warehouse(url))


@app.command()
def seed(
    users: Annotated[int, typer.Option(help="Number of users to generate.")] = 5000,
    days: Annotated[int, typer.Option(help="Days of history ending at --end-date.")] = 730,
    end_date: Annotated[str, typer.Option(help="Last day of generated history, YYYY-MM-DD.")] = "2024-12-31",
    seed: Annotated[int | None, typer.Option(help="Random seed (default: SPENDPRED_SEED).")] = None,
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
) -> None:
    """Fill the warehouse with a realistic synthetic population (replaces the source tables)."""
    from spendpred import pipeline

    _echo_json(pipeline.seed(users=users, days=days, end_date=end_date, seed=seed, url=url))


@app.command("import-cdnow")
def import_cdnow(
    path: Annotated[Path, typer.Argument(help="CDNOW master file (customer_id, YYYYMMDD, CDs, dollars).")],
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
) -> None:
    """Load the CDNOW purchase log into the source relations (idempotent)."""
    from spendpred import pipeline

    _echo_json(pipeline.import_cdnow(path, url))


@app.command()
def summary(url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None) -> None:
    """Print what the warehouse holds."""
    from spendpred import pipeline

    _echo_json(pipeline.warehouse_summary(url))


def main() -> None:
    """Console-script entry point: run the app, turning spendpred errors into one clear line."""
    try:
        app()
    except SpendpredError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
