"""The ``spendpred`` command line: a thin front end over :mod:`spendpred.pipeline`.

The run parameters of ``train`` and ``score`` (flag, default, help, choices) are generated
from the one parameter spec, :mod:`spendpred.params`, and checked with it once, before any
step runs, so they take the same names and values as the DAG params; the command passes the
checked object (``TrainParams``, ``ScoreParams``) on, never its values unpacked. Old spellings
(``--horizon-days``, ``--no-publish``) still work as hidden aliases.

Every command runs inside ``spendpred.failures.one_line``, the error path the Airflow tasks
use too: an expected failure ends as one ``error:`` line (secrets masked) and exit status 2.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from spendpred import params
from spendpred.failures import describe, one_line
from spendpred.params import ScoreParams, TrainParams

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
    for noisy in ("alembic", "great_expectations", "urllib3", "httpx"):  # MLflow's own lines stay at INFO (logs.route_mlflow_output)
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _option(spec: type[params.RunParams], name: str, *, required: bool = False) -> Any:
    """Return the Typer option (default, ``--flag``, help, choices) of parameter ``name`` of ``spec``.

    The value is not checked by click but by ``params.check`` in the command, so a bad one
    stops with the same one-line message as in a DAG run. Raises ``KeyError`` for an unknown name.
    """
    field = params.param_specs(spec)[name]
    rule = "" if field.choices or field.types == ["boolean"] else f" Use {field.rule}."
    return typer.Option(
        ... if required else field.default,
        field.flag,
        help=field.description + rule,
        metavar=f"[{'|'.join(field.choices)}]" if field.choices else None,
        show_default=field.default is not None,
    )


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
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="Number of users to generate.")] = 5000,
    days: Annotated[int, typer.Option(help="Days of history ending at --end-date.")] = 730,
    end_date: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="Last day of generated history.")] = "2024-12-31",  # type: ignore[assignment]
    seed: Annotated[int | None, typer.Option(help="Random seed (default: SPENDPRED_SEED).")] = None,
    daily_active: Annotated[
        float,
        typer.Option(
            help="Share of the users signed up by a day who act on it (any order, event or review), in (0, 0.5]; "
            "weekends a little more, early weekdays a little less."
        ),
    ] = 0.05,
    append_day: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            metavar="YYYY-MM-DD",
            help="Instead of seeding: add one day of activity dated YYYY-MM-DD to the existing warehouse, at the "
            "--daily-active share (e.g. the day after the last scored night). Refused, with nothing written, when "
            "the warehouse already holds rows on or after that day.",
        ),
    ] = None,
    new_users: Annotated[
        int | None,
        typer.Option(help="With --append-day: users who sign up that day (default: the mean daily signups of the 28 days before)."),
    ] = None,
    shift: Annotated[
        str | None,
        typer.Option(
            help="With --append-day: write the day in a changed world, for drift evidence: cents (the source reloads money "
            "in cents: stored amounts x100 on --shift-from, new rows in cents), price=K (new rows' prices x K) or "
            "rename=OLD:NEW (a category renamed, stored rows too on --shift-from). Pass it on every later day to stay shifted."
        ),
    ] = None,
    shift_from: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="With --shift: the first day of the changed world (default: --append-day)."),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
) -> None:
    """Fill the warehouse with a realistic synthetic population (replaces the source tables), or add one day to it."""
    from spendpred import pipeline
    from spendpred.errors import ConfigError

    sources = {name: getattr(ctx.get_parameter_source(name), "name", "DEFAULT") for name in ("users", "days", "end_date")}
    given = {name for name, source in sources.items() if source not in ("DEFAULT", "DEFAULT_MAP")}  # typed by the user
    if append_day is not None and given:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(given))
        verb = "does" if len(given) == 1 else "do"
        raise ConfigError(
            f"{flags} {verb} not apply with --append-day (it adds one day to the users already in the warehouse): "
            f"drop {'it' if len(given) == 1 else 'them'}"
        )
    if append_day is None and new_users is not None:
        raise ConfigError("--new-users applies only with --append-day YYYY-MM-DD")
    if append_day is None and (shift is not None or shift_from is not None):
        raise ConfigError("--shift and --shift-from apply only with --append-day YYYY-MM-DD")
    if shift is None and shift_from is not None:
        raise ConfigError("--shift-from needs --shift (cents, price=K or rename=OLD:NEW)")
    if append_day is not None:
        _echo_json(pipeline.append_day(append_day.date(), seed, url, daily_active=daily_active, new_users=new_users,
                                       shift=shift, shift_from=None if shift_from is None else shift_from.date()))  # fmt: skip
        return
    _echo_json(pipeline.seed(users, days, end_date.date(), seed, url, daily_active=daily_active))


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
    out: Annotated[str, typer.Option("--out", help="Folder for snapshot.parquet and manifest.json.")],
    with_labels: Annotated[bool, typer.Option("--with-labels", help="Add label = completed spend in (D, D+H].")] = False,
    horizon: int | None = _option(TrainParams, "horizon"),
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
    horizon_days: Annotated[int | None, typer.Option("--horizon-days", hidden=True, help="Old name of --horizon.")] = None,
) -> None:
    """Extract a point-in-time behaviour snapshot (features + text [+ labels])."""
    from spendpred import pipeline

    day = params.parse_as_of(as_of)
    horizon = horizon if horizon is not None else horizon_days  # checked by the step, once
    _echo_json(pipeline.extract_snapshot(day, out, with_labels=with_labels, horizon_days=horizon, url=url))


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
    as_of: str = _option(TrainParams, "as_of", required=True),
    horizon: int | None = _option(TrainParams, "horizon"),
    epochs: int | None = _option(TrainParams, "epochs"),
    max_users: int | None = _option(TrainParams, "max_users"),
    freeze: str | None = _option(TrainParams, "freeze"),
    loss: str | None = _option(TrainParams, "loss"),
    promote: str = _option(TrainParams, "promote"),
    device: str = _option(TrainParams, "device"),
    dry_run: bool = _option(TrainParams, "dry_run"),
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
    actor: Annotated[
        str | None, typer.Option(help="Who forces the promotion (recorded on the version with --promote force); default: the OS user.")
    ] = None,
    horizon_days: Annotated[int | None, typer.Option("--horizon-days", hidden=True, help="Old name of --horizon.")] = None,
) -> None:
    """Retrain: extract, validate, fine-tune, evaluate against baselines, register, promote."""
    import getpass

    from spendpred import pipeline

    run = params.check_train(
        as_of=as_of, horizon=horizon if horizon is not None else horizon_days, epochs=epochs, max_users=max_users,
        freeze=freeze, loss=loss, promote=promote, device=device, dry_run=dry_run,
    )  # fmt: skip
    _echo_json(pipeline.train(run, url=url, actor=(actor or "").strip() or getpass.getuser()))  # the checked object


@app.command()
def score(
    as_of: str = _option(ScoreParams, "as_of", required=True),
    model: str = _option(ScoreParams, "model"),
    dry_run: bool = _option(ScoreParams, "dry_run"),
    shards: int = _option(ScoreParams, "shards"),
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
    no_publish: Annotated[bool, typer.Option("--no-publish", hidden=True, help="Old name of --dry-run.")] = False,
) -> None:
    """Nightly scoring: extract, validate, score, assign tiers, publish atomically."""
    from spendpred import pipeline

    run = params.check_score(as_of=as_of, model=model, dry_run=dry_run or no_publish, shards=shards)
    _echo_json(pipeline.score(run, url=url))  # the checked object: no step checks it again


@app.command()
def report(
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw data as JSON.")] = False,
) -> None:
    """Print the latest run's tiers and thresholds, the champion's metrics, and SQL to query them.

    Exits 1 when part of it could not be read (the warehouse or the model registry): what
    could be read is still printed, and each ``error:`` line says what failed. Exits 2 (one
    ``error:`` line) when the SQLite warehouse file does not exist (a mistyped path, as for every
    other reading command) or when the SQLite MLflow store does not exist although scores were
    published: a wrong tracking URI, not "no champion yet".
    """
    from spendpred import pipeline, report, warehouse
    from spendpred.errors import ConfigError

    # a mistyped SQLite path is refused like every other reading command's (the page says "not yet")
    warehouse.get_engine(url, create=False).dispose()
    data = pipeline.run_summary(url)
    if as_json:
        _echo_json(data)
    else:
        typer.echo(report.format_report(data))
    if data.get("registry_missing"):
        raise ConfigError(next(e for e in data["errors"] if data["registry_missing"] in e))
    if data["errors"]:
        raise typer.Exit(1)


@app.command()
def monitor(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Run date D, YYYY-MM-DD (default: the latest published partition).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Warehouse URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw data as JSON.")] = False,
) -> None:
    """Evaluate the partitions matured by D, recompute D's drift, and print realized metrics and drift."""
    from spendpred import monitoring, pipeline

    day = params.parse_as_of(as_of) if as_of is not None else None
    data = pipeline.monitor(day, url)
    if as_json:
        _echo_json(data)
    else:
        typer.echo(monitoring.format_monitor(data))


@app.command()
def explain(
    user_id: Annotated[str, typer.Argument(help="The user to explain (as in user_spend_scores).")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Scoring run date D, YYYY-MM-DD (default: the newest run in staging).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model version or alias (default: the version that scored D).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw data as JSON.")] = False,
) -> None:
    """Print why a user scored what they did: prediction, tier, top reasons and every attribution."""
    from spendpred import explain as reasons
    from spendpred import pipeline

    day = params.parse_as_of(as_of) if as_of is not None else None
    data = pipeline.explain_user(user_id, day, model)
    if as_json:
        _echo_json(data)
    else:
        typer.echo(reasons.format_explanation(data))


CREATES_WAREHOUSE = frozenset({("db", "init"), ("seed",), ("import-cdnow",)})
"""The commands that may create a new SQLite warehouse file; every other command needs an existing one."""


_CLICK = sys.modules[typer.BadParameter.__module__]
"""The exceptions module of the click that Typer runs on (Typer ships its own copy)."""


def _guarded(group: Any, path: tuple[str, ...] = ()) -> Any:
    """Run every command of ``group`` inside ``spendpred.failures.one_line`` (the Airflow tasks' error path
    too): an expected failure becomes one ``SpendpredError`` line, and every command not in
    ``CREATES_WAREHOUSE`` refuses a missing SQLite file, so a mistyped path is reported instead
    of becoming a new empty warehouse file."""
    for name, command in group.commands.items():
        where = (*path, name)
        if hasattr(command, "commands"):  # a command group
            _guarded(command, where)
        elif command.callback is not None and not getattr(command.callback, "spendpred_one_line", False):
            command.callback = one_line(creates_warehouse=where in CREATES_WAREHOUSE)(command.callback)
    return group


def fail(exc: BaseException) -> NoReturn:
    """Exit 2 with one line ``error: <what is wrong and the fix>`` (secrets masked) for an expected
    failure (see ``spendpred.failures.describe``); re-raise anything else (a bug keeps its traceback)."""
    message = describe(exc)
    if message is None:
        raise exc
    logging.getLogger("spendpred").debug("failure behind the error line", exc_info=exc)  # shown with --verbose
    typer.secho(f"error: {' '.join(message.splitlines())}", err=True, fg=typer.colors.RED)
    raise SystemExit(2) from None


def main() -> None:
    """Console-script entry point: run the app; every expected failure becomes one ``error:`` line and exit 2."""
    command = _guarded(typer.main.get_command(app))
    try:
        code = command.main(prog_name="spendpred", standalone_mode=False)
    except _CLICK.NoArgsIsHelpError as exc:
        exc.show()  # the help text, as before
        raise SystemExit(exc.exit_code) from None
    except _CLICK.ClickException as exc:  # a bad or missing option: one line too, exit 2 as click does
        hint = f" (see `{exc.ctx.command_path} --help`)" if isinstance(exc, _CLICK.UsageError) and exc.ctx else ""
        typer.secho(f"error: {' '.join(exc.format_message().split())}{hint}", err=True, fg=typer.colors.RED)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001 - describe() decides what is expected; the rest re-raises
        fail(exc)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
