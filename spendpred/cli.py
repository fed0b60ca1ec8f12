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


@db_app.command("grant-readonly")
def db_grant_readonly(
    role: Annotated[str, typer.Argument(help="An existing PostgreSQL role (e.g. created with CREATE ROLE reporting LOGIN).")],
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
) -> None:
    """Give a role read-only access to the downstream views (PostgreSQL)."""
    from spendpred import pipeline

    _echo_json(pipeline.grant_readonly(role, url))


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


@app.command()
def extract(
    as_of: Annotated[str, typer.Option("--as-of", help="Snapshot date D, YYYY-MM-DD (rows before D + 1 day).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for snapshot.parquet and manifest.json.")],
    with_labels: Annotated[bool, typer.Option("--with-labels", help="Add label = completed spend in (D, D+H].")] = False,
    horizon_days: Annotated[int | None, typer.Option("--horizon-days", help="H (default: SPENDPRED_HORIZON_DAYS).")] = None,
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
) -> None:
    """Extract a point-in-time behaviour snapshot (features + text [+ labels])."""
    from spendpred import pipeline

    _echo_json(pipeline.extract_snapshot(as_of, out, with_labels=with_labels, horizon_days=horizon_days, url=url))


@app.command()
def validate(
    snapshot_dir: Annotated[Path, typer.Argument(help="A snapshot folder written by `spendpred extract`.")],
    previous: Annotated[Path | None, typer.Option(help="The previous snapshot, for the row-count check.")] = None,
) -> None:
    """Validate a snapshot with Great Expectations; exits 2 listing each failed expectation."""
    from spendpred import pipeline

    _echo_json(pipeline.validate_snapshot(snapshot_dir, previous))


@app.command()
def train(
    as_of: Annotated[str, typer.Option("--as-of", help="Run date R: features as of R-H, labels in (R-H, R].")],
    horizon_days: Annotated[int | None, typer.Option("--horizon-days", help="H (default: SPENDPRED_HORIZON_DAYS).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    max_users: Annotated[int | None, typer.Option("--max-users", help="Train on a stable subset of this many users.")] = None,
    freeze: Annotated[str | None, typer.Option(help="none | embeddings | bottom-k:N | all-but-head.")] = None,
    loss: Annotated[str | None, typer.Option(help="mse | huber | ziln.")] = None,
    promote: Annotated[str, typer.Option(help="auto | never | force.")] = "auto",
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
) -> None:
    """Retrain: extract, validate, fine-tune, evaluate against baselines, register, promote."""
    from spendpred import pipeline

    _echo_json(pipeline.train(as_of, horizon_days, epochs, max_users, freeze, loss, promote, url))


@app.command()
def score(
    as_of: Annotated[str, typer.Option("--as-of", help="Scoring date: features as of this date.")],
    model: Annotated[str, typer.Option(help="champion | challenger | a version number.")] = "champion",
    no_publish: Annotated[bool, typer.Option("--no-publish", help="Score and tier, but write nothing to the warehouse.")] = False,
    shards: Annotated[int, typer.Option(help="Split users into this many shards (scored one after another).")] = 1,
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
) -> None:
    """Nightly scoring: extract, validate, score, assign tiers, publish atomically."""
    from spendpred import pipeline

    _echo_json(pipeline.score(as_of, model=model, publish=not no_publish, shards=shards, url=url))


@app.command()
def report(
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw data as JSON.")] = False,
) -> None:
    """Print the latest run's tiers and thresholds, the champion's metrics, and SQL to query them."""
    from spendpred import pipeline

    data = pipeline.run_summary(url)
    if as_json:
        _echo_json(data)
    else:
        typer.echo(pipeline.format_report(data))


def main() -> None:
    """Console-script entry point: run the app, turning spendpred errors into one clear line."""
    try:
        app()
    except SpendpredError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
