"""Reasons through the nightly steps (score -> explain -> publish) and ``spendpred explain`` on a tiny model."""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from spendpred import cli, explain, pipeline, warehouse
from spendpred.snapshot import RunFolder
from tests.tiny_bert import make_tiny_bert

RUN_DATE = dt.date(2024, 6, 30)


def _reasons(url: str) -> list[tuple]:
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT r.user_id, r.rank, r.reason, r.contribution, r.template_version, s.tier "
                "FROM current_user_spend_reasons r JOIN user_spend_scores s ON s.as_of = r.as_of AND s.user_id = r.user_id "
                "ORDER BY r.user_id, r.rank"))]  # fmt: skip
    finally:
        engine.dispose()


def _reasons_full(url: str) -> list[tuple]:
    engine = warehouse.get_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT user_id, rank, reason, contribution, template_version, as_of, feature "
                "FROM current_user_spend_reasons ORDER BY user_id, rank"))]  # fmt: skip
    finally:
        engine.dispose()


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["spendpred", "explain", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_nightly_publishes_reasons_and_explain_prints_them(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(make_tiny_bert(tmp_path / "tiny-bert")))
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "60")
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", sqlite_url)
    pipeline.seed(users=300, days=400, end_date=RUN_DATE, seed=7, url=sqlite_url)
    pipeline.train(RUN_DATE, epochs=1, promote="force", url=sqlite_url)
    scored = pipeline.score(RUN_DATE, url=sqlite_url)
    assert scored["reasons"]["users"] == scored["counts"]["high"] and scored["reasons"]["scope"] == "default"
    rows = _reasons(sqlite_url)
    assert len(rows) == 3 * scored["counts"]["high"] and {r[5] for r in rows} == {"high"} and {r[4] for r in rows} == {explain.REASON_TEMPLATE_VERSION}
    run = RunFolder.for_date("score", RUN_DATE)
    assert run.reasons_parquet.is_file() and run.reasons_json.is_file()
    info = scored["reasons"]  # head-only, every pooled embedding read from the cache the shard just wrote
    assert info["method"] == "head" and info["cache_hits"] == info["users"] and info["encoded"] == 0
    assert info["max_gap"] <= explain.ABS_TOLERANCE and info["carried"] == 0
    published = pq.read_table(run.reasons_parquet, columns=list(explain.REASON_COLUMNS))

    rerun = pipeline.explain_scores(run.ref())["reasons"]  # same inputs: every user keeps its reasons, none attributed
    assert rerun["carried"] == rerun["users"] == info["users"] and rerun["attributed"] == 0 and rerun["encoded"] == 0
    assert pq.read_table(run.reasons_parquet, columns=list(explain.REASON_COLUMNS)).equals(published)

    monkeypatch.setenv("SPENDPRED_REASONS_SCOPE", "all")  # a rerun replaces the partition's reasons
    again = pipeline.score(RUN_DATE, url=sqlite_url)
    assert again["reasons"]["users"] == 300 and len(_reasons(sqlite_url)) == 900
    # the high tier's reasons were carried (same inputs), the others attributed; the carried rows are the same
    assert again["reasons"]["carried"] == info["users"] and again["reasons"]["attributed"] == 300 - info["users"]
    wide = pq.read_table(run.reasons_parquet, columns=list(explain.REASON_COLUMNS)).to_pandas()
    pd.testing.assert_frame_equal(wide[wide["user_id"].isin(published.column("user_id").to_pylist())].reset_index(drop=True),
                                  published.to_pandas())  # fmt: skip

    user = rows[0][0]
    code, out, err = _cli(monkeypatch, capsys, user)
    assert code == 0, err
    assert f"user {user} as of {RUN_DATE}: tier high" in out and "  1. " in out and "(baseline)" in out
    # `spendpred explain` attributes through the encoder (the exact text split), the nightly through the head: the
    # same baseline and prediction, so the same total; a head column's share agrees closely, not exactly (path)
    table = out.split("attributions (currency):\n")[1]
    full = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (\S+) +([+-][\d.]+)  ", table, re.MULTILINE)}
    spread = abs(full["(prediction)"] - full["(baseline)"])
    for _, _, _, contribution, _, _, feature in (r for r in _reasons_full(sqlite_url) if r[0] == user):
        if not feature.startswith("text:"):
            assert abs(full[feature] - contribution) <= max(0.05, 0.05 * spread), (feature, full[feature], contribution, out)

    for args, expected in (
        (("nobody",), "user 'nobody' is not in the scoring snapshot as of 2024-06-30"),
        ((user, "--as-of", "2024-01-01"), "no scoring run as of 2024-01-01"),
        ((user, "--model", "99"), "version 99 does not exist"),
        ((user, "--as-of", "2024-13-01"), "2024-13-01"),
    ):
        code, out, err = _cli(monkeypatch, capsys, *args)
        assert code == 2 and out == "", (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, err)
