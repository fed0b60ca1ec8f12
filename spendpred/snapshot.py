"""The snapshot contract and the run folder: the one module that answers "where is X in staging?".

A *snapshot* is a folder holding ``snapshot.parquet`` (one row per user: ``user_id``, ``text``,
``FEATURE_COLUMNS``, ``past_spend`` and, for training, ``label``), its ``manifest.json`` and,
once checked, ``validation.json``/``validation.md``. ``spendpred.behaviour`` writes it,
``spendpred.validation`` checks it, everything else reads it through :class:`SnapshotDir`.

A *run folder* is where one run of one kind keeps everything it stages::

    <staging>/train/<as_of>/snapshot/                 the labelled snapshot (features as of R - H)
    <staging>/train/<as_of>/model/                    bundle/, evaluation/, test_predictions.parquet,
                                                      result.json, registered.json
    <staging>/score/<as_of>/snapshot/                 the scoring snapshot (features as of D)
    <staging>/score/<as_of>/shards/shard-<i>-of-<n>.parquet
    <staging>/score/<as_of>/tiers.parquet, tiers.json

:class:`RunFolder` is built from ``(kind, as_of, root)`` with ``as_of`` a ``datetime.date``;
Airflow tasks pass :meth:`RunFolder.ref` (``{"kind", "as_of", "root"}``, JSON) through XCom
and :meth:`RunFolder.from_ref` turns it back, reading the date once. A rerun of a date
overwrites its own folder.

The staging root comes from ``SPENDPRED_STAGING_DIR`` (a folder or a ``file://`` URL; default
``<home>/staging``), resolved by :func:`staging_root` only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from spendpred.errors import ConfigError, DataError, ValidationFailed
from spendpred.files import read_json, sha256_file, write_json_atomic

if TYPE_CHECKING:
    from spendpred.config import Settings


# -- the snapshot contract ------------------------------------------------------------------

SNAPSHOT_FILE = "snapshot.parquet"
MANIFEST_FILE = "manifest.json"
VALIDATION_JSON = "validation.json"
VALIDATION_MD = "validation.md"
REPORT_FILES = (VALIDATION_JSON, VALIDATION_MD)
"""The validation reports written beside a snapshot (removed when it is extracted again)."""

FEATURE_COLUMNS: tuple[str, ...] = (
    "recency_days",
    "tenure_days",
    "frequency_30d",
    "frequency_90d",
    "frequency_365d",
    "frequency_all",
    "monetary_30d",
    "monetary_90d",
    "monetary_365d",
    "monetary_all",
    "avg_basket",
    "category_diversity",
    "views_30d",
    "views_90d",
    "clicks_30d",
    "clicks_90d",
    "add_to_carts_30d",
    "add_to_carts_90d",
    "searches_30d",
    "searches_90d",
    "wishlists_30d",
    "wishlists_90d",
    "review_count",
    "mean_rating",
    "days_since_last_event",
    "purchase_days",
    "first_purchase_days",
    "repeat_value",
)
"""The numeric features of a snapshot (float64, never null), in column order. The last three
are the BG/NBD x Gamma-Gamma inputs (``spendpred.model.hybrid``): distinct days with a
completed order, days from the first one to the as-of date, and the mean spend of the repeat
purchase days (0 for users without one)."""
MONEY_COLUMNS: tuple[str, ...] = ("monetary_30d", "monetary_90d", "monetary_365d", "monetary_all", "avg_basket", "repeat_value")


def snapshot_columns(with_labels: bool) -> list[str]:
    """Return the Parquet column names of a snapshot, in order."""
    return ["user_id", "text", *FEATURE_COLUMNS, "past_spend", *(["label"] if with_labels else [])]


def _iso_date(value: Any, what: str) -> dt.date:
    """Return the ``YYYY-MM-DD`` date that spendpred itself wrote (a manifest, an XCom reference).

    User input is parsed at the front ends (``spendpred.params``); this only reads back what
    was written. Raises ``ValueError`` naming ``what`` when the text is not such a date.
    """
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{what}={value!r} is not a date (YYYY-MM-DD)") from None


@dataclass
class Manifest:
    """The ``manifest.json`` of a snapshot (keys as in the snapshot contract; ``as_of`` typed)."""

    as_of: dt.date
    horizon_days: int
    with_labels: bool
    row_count: int
    text_template_version: str
    feature_columns: list[str]
    source_row_counts: dict[str, int]
    max_source_timestamp: str | None
    checksum: str
    created_at: str
    max_source_timestamps: dict[str, str | None] = field(default_factory=dict)
    source_checks: dict[str, dict[str, Any]] | None = None
    """Per source-data contract rule (``spendpred.validation.SOURCE_RULES``): ``{"violations": n,
    "examples": [...]}``; ``None`` in manifests written before the contract (the gate refuses them)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as a JSON-ready dict (``as_of`` as ``YYYY-MM-DD``)."""
        return {**asdict(self), "as_of": self.as_of.isoformat()}

    def write(self, directory: Path) -> Path:
        """Write ``manifest.json`` into ``directory`` atomically; return its path."""
        return write_json_atomic(Path(directory) / MANIFEST_FILE, self.to_dict())

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read ``manifest.json`` from a snapshot directory.

        Raises ``DataError`` when it is missing, not JSON, lacks a required key or holds a
        malformed ``as_of``.
        """
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise DataError(f"no {MANIFEST_FILE} in {directory}: extract the snapshot first (`spendpred extract`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is not valid JSON ({exc}): re-extract the snapshot") from exc
        known = set(cls.__dataclass_fields__)
        missing = sorted(known - {"max_source_timestamps", "source_checks"} - set(data))
        if missing:
            raise DataError(f"{path} lacks the key(s) {', '.join(missing)}: re-extract the snapshot")
        try:
            as_of = _iso_date(data["as_of"], "as_of")
        except ValueError as exc:
            raise DataError(f"{path}: {exc}; re-extract the snapshot") from exc
        return cls(**{**{k: v for k, v in data.items() if k in known}, "as_of": as_of})


@dataclass(frozen=True)
class SnapshotDir:
    """A snapshot folder: its files, its (cached) manifest and its validation status."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def parquet(self) -> Path:
        """``snapshot.parquet``."""
        return self.path / SNAPSHOT_FILE

    @property
    def manifest_file(self) -> Path:
        """``manifest.json``."""
        return self.path / MANIFEST_FILE

    @property
    def validation_json(self) -> Path:
        """``validation.json`` (the GX results, the verdict and the checksum validated)."""
        return self.path / VALIDATION_JSON

    @property
    def validation_md(self) -> Path:
        """``validation.md`` (the readable report)."""
        return self.path / VALIDATION_MD

    @cached_property
    def manifest(self) -> Manifest:
        """The snapshot's manifest, read once (raises ``DataError`` like :meth:`Manifest.read`)."""
        return Manifest.read(self.path)

    def validation_report(self) -> dict[str, Any] | None:
        """Return the content of ``validation.json``, or ``None`` when the snapshot was never validated."""
        if not self.validation_json.is_file():
            return None
        return read_json(self.validation_json, "validation result")

    def passed_validation(self) -> bool:
        """Return whether the manifest exists and ``validation.json`` says the snapshot passed (no checksum check)."""
        try:
            report = self.validation_report() if self.manifest_file.is_file() else None
        except ConfigError:  # an unreadable report passed nothing
            return False
        return bool(report and report.get("success"))

    def require_validated(self) -> Manifest:
        """Return the manifest of a snapshot that passed validation and is still the file validated.

        The one definition of "may anything train on or score this snapshot?": ``validation.json``
        exists, says ``success``, and the SHA-256 it recorded is that of ``snapshot.parquet`` now.
        Raises ``ValidationFailed`` naming the command to run otherwise, ``DataError`` when the
        manifest is unreadable.
        """
        report = self.validation_report()
        if report is None:
            raise ValidationFailed(f"snapshot {self.path} has not been validated: run `spendpred validate {self.path}` first")
        if not report.get("success"):
            raise ValidationFailed(
                f"snapshot {self.path} failed validation (see {self.validation_md}): nothing trains on it or scores it"
            )
        manifest = self.manifest
        validated = report.get("checksum")
        if not validated:
            raise ValidationFailed(
                f"{self.validation_json} records no checksum (written by an older spendpred): "
                f"run `spendpred validate {self.path}` again"
            )
        if not self.parquet.is_file():
            raise ValidationFailed(f"{self.parquet} is missing: extract the snapshot again")
        current = sha256_file(self.parquet)
        if current != validated:
            raise ValidationFailed(
                f"{self.parquet} changed after it was validated (sha256 {current[:12]}… is not the validated "
                f"{str(validated)[:12]}…): run `spendpred validate {self.path}` again, or extract it again"
            )
        return manifest


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first (what creating ``path`` would add)."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def check_can_create(folder: str | Path) -> None:
    """Raise the ``OSError`` that creating or writing in ``folder`` would meet, creating and changing nothing.

    Writing is tried (a temporary file in the nearest existing folder, and a temporary folder
    when ``folder`` is missing, both removed at once), since permission bits say nothing for
    root or on a read-only mount. The error names the folder that cannot be used
    (``NotADirectoryError`` when a file is in the way); ``spendpred.errors.describe`` words it.
    """
    import errno
    import tempfile

    folder = Path(os.path.abspath(folder))
    missing = _missing_folders(folder)
    existing = missing[-1].parent if missing else folder
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(missing[-1] if missing else folder))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
        if missing:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".spendpred-probe-"))
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(missing[-1] if missing else folder)) from None


@contextmanager
def staged_snapshot(out_dir: str | Path) -> Iterator[Path]:
    """Yield a new, empty hidden folder beside ``out_dir`` to write a snapshot into; move the snapshot
    into ``out_dir`` only when the block succeeds, so that a failed extract creates nothing.

    On success the validation reports ``out_dir`` held (they describe an older file) are removed
    and each new file replaces its namesake with ``os.replace``, ``manifest.json`` last; other
    files of ``out_dir`` are kept. On failure the hidden folder and every folder this call
    created (``out_dir`` and its missing parents, e.g. a new run folder) are removed, and an
    existing ``out_dir`` (a snapshot validated earlier included) is left exactly as it was.
    Raises ``ConfigError`` when ``out_dir`` is a file, and the ``OSError`` of a folder that
    cannot be created (a file in the way, a read-only or full disk).
    """
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"cannot write a snapshot into {out_dir}: it is a file, not a folder: choose a folder path")
    check_can_create(out_dir)  # names the folder in the way, not the hidden one below
    created = _missing_folders(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        yield tmp
        out_dir.mkdir(exist_ok=True)
        for name in REPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)
        names = sorted(child.name for child in tmp.iterdir())
        for name in sorted(names, key=lambda n: n == MANIFEST_FILE):  # the manifest describes the rest: last
            os.replace(tmp / name, out_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # deepest first; a folder someone else filled meanwhile stays
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    shutil.rmtree(tmp, ignore_errors=True)


# -- the staging root -----------------------------------------------------------------------


def local_path(location: str | Path, setting: str = "SPENDPRED_STAGING_DIR") -> Path:
    """Return the local folder named by ``location``: a plain path or a ``file://`` URL.

    Every stage reads and writes staging with local-file APIs (Parquet, Great Expectations,
    torch, MLflow's ``log_artifacts``), so object storage (``s3://``, ``gs://``, ...) is used by
    mounting it on every worker (a shared volume, s3fs or gcsfuse) and naming the mount here.
    Raises ``ConfigError`` for any other scheme or a remote ``file://`` host.
    """
    text = str(location).strip()
    parts = urlsplit(text)
    if isinstance(location, Path) or not parts.scheme or (len(parts.scheme) == 1 and text[1:3] in (":\\", ":/")):
        return Path(text).expanduser()  # a plain path (a Windows drive letter is not a scheme)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{setting}={text!r} names the host {parts.netloc!r}: use file:///absolute/path or a plain path")
        return Path(url2pathname(unquote(parts.path)))
    try:
        import fsspec  # noqa: F401 - only to word the message
    except ImportError:
        hint = "fsspec is not installed either"
    else:
        hint = "fsspec is installed, but staging is read and written with local-file APIs"
    raise ConfigError(
        f"{setting}={text!r}: staging on {parts.scheme}:// is not supported directly ({hint}); mount the "
        "storage on every worker (a shared volume, s3fs, gcsfuse) and set a plain path or file:// URL"
    )


def staging_root(settings: Settings | None = None) -> Path:
    """Return the staging folder: ``SPENDPRED_STAGING_DIR`` (path or ``file://`` URL), else ``<home>/staging``.

    Not created here. Raises ``ConfigError`` for an unsupported URL (see :func:`local_path`).
    """
    from spendpred.config import get_settings

    settings = settings or get_settings()
    value = settings.staging_dir
    if value is None or not str(value).strip():
        return Path(settings.home) / "staging"
    return local_path(value)


# -- the run folder -------------------------------------------------------------------------

KINDS: tuple[str, ...] = ("train", "score")
SHARDS_DIR = "shards"
TIERS_PARQUET = "tiers.parquet"
TIERS_JSON = "tiers.json"
MODEL_DIR = "model"
BUNDLE_DIR = "bundle"
EVALUATION_DIR = "evaluation"
TEST_PREDICTIONS = "test_predictions.parquet"
RESULT_JSON = "result.json"
REGISTERED_JSON = "registered.json"


@dataclass(frozen=True)
class RunFolder:
    """Where one run (``kind`` ``train`` or ``score``, date ``as_of``) keeps its files under ``root``."""

    kind: str
    as_of: dt.date
    root: Path

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"run kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.as_of, dt.date) or isinstance(self.as_of, dt.datetime):
            raise ConfigError(
                f"as_of={self.as_of!r} must be a datetime.date: parse text once, at the front end (spendpred.params)"
            )
        object.__setattr__(self, "root", Path(self.root))

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def for_date(cls, kind: str, as_of: dt.date, settings: Settings | None = None) -> RunFolder:
        """Return the run folder of ``kind`` and ``as_of`` under the configured staging root."""
        return cls(kind, as_of, staging_root(settings))

    @classmethod
    def from_ref(cls, ref: Mapping[str, Any]) -> RunFolder:
        """Return the run folder described by a :meth:`ref` mapping (other keys are ignored).

        Raises ``ConfigError`` when ``kind``, ``as_of`` or ``root`` is missing or malformed.
        """
        missing = [key for key in ("kind", "as_of", "root") if not ref.get(key)]
        if missing:
            raise ConfigError(
                f"a run folder reference needs kind, as_of and root; {', '.join(missing)} missing in {dict(ref)!r}: "
                "pass the result of the previous step"
            )
        try:
            as_of = _iso_date(ref["as_of"], "as_of")
        except ValueError as exc:
            raise ConfigError(f"run folder reference {dict(ref)!r}: {exc}: pass the result of the previous step") from exc
        return cls(str(ref["kind"]), as_of, local_path(ref["root"]))

    @classmethod
    def coerce(cls, run: RunFolder | Mapping[str, Any]) -> RunFolder:
        """Return ``run`` itself, or the run folder its :meth:`ref` mapping describes."""
        return run if isinstance(run, RunFolder) else cls.from_ref(run)

    @classmethod
    def containing(cls, snapshot_dir: Path, settings: Settings | None = None) -> RunFolder | None:
        """Return the run folder whose ``snapshot/`` is ``snapshot_dir``, or ``None`` for a folder outside staging."""
        path = Path(snapshot_dir)
        if path.name != "snapshot" or path.parent.parent.name not in KINDS:
            return None
        root = staging_root(settings)
        if path.parent.parent.parent.resolve() != root.resolve():
            return None
        try:
            as_of = _iso_date(path.parent.name, "run folder")
        except ValueError:
            return None
        return cls(path.parent.parent.name, as_of, root)

    def ref(self) -> dict[str, str]:
        """Return ``{"kind", "as_of", "root"}`` as JSON-able text (what XCom carries between tasks)."""
        return {"kind": self.kind, "as_of": self.as_of.isoformat(), "root": str(self.root)}

    # -- where things are -----------------------------------------------------------------

    @property
    def path(self) -> Path:
        """``<root>/<kind>/<as_of>``."""
        return self.root / self.kind / self.as_of.isoformat()

    @property
    def snapshot_dir(self) -> Path:
        """``snapshot/``: the snapshot, its manifest and validation reports."""
        return self.path / "snapshot"

    @cached_property
    def snapshot(self) -> SnapshotDir:
        """The run's snapshot (its manifest is read once per run folder object)."""
        return SnapshotDir(self.snapshot_dir)

    @property
    def manifest(self) -> Manifest:
        """The snapshot's manifest (cached)."""
        return self.snapshot.manifest

    @property
    def shards_dir(self) -> Path:
        """``shards/``: one scored Parquet file per shard."""
        return self.path / SHARDS_DIR

    def shard_path(self, shard: int, shards: int) -> Path:
        """``shards/shard-<i>-of-<n>.parquet`` (user_id, predicted_spend)."""
        return self.shards_dir / f"shard-{int(shard):03d}-of-{int(shards):03d}.parquet"

    @property
    def tiers_parquet(self) -> Path:
        """``tiers.parquet``: every user's predicted spend and tier."""
        return self.path / TIERS_PARQUET

    @property
    def tiers_json(self) -> Path:
        """``tiers.json``: thresholds, counts and the model version of the tiers."""
        return self.path / TIERS_JSON

    @property
    def model_dir(self) -> Path:
        """``model/``: what training wrote (bundle, evaluation, test predictions, results)."""
        return self.path / MODEL_DIR

    @property
    def bundle_dir(self) -> Path:
        """``model/bundle/``: the saved model bundle."""
        return self.model_dir / BUNDLE_DIR

    @property
    def evaluation_dir(self) -> Path:
        """``model/evaluation/``: the evaluation report and plots."""
        return self.model_dir / EVALUATION_DIR

    @property
    def test_predictions(self) -> Path:
        """``model/test_predictions.parquet``: the held-out users and every model's predictions."""
        return self.model_dir / TEST_PREDICTIONS

    @property
    def result_json(self) -> Path:
        """``model/result.json``: the training summary (params, history, metrics)."""
        return self.model_dir / RESULT_JSON

    @property
    def registered_json(self) -> Path:
        """``model/registered.json``: the MLflow run id and registered version."""
        return self.model_dir / REGISTERED_JSON

    @property
    def validation_json(self) -> Path:
        """``snapshot/validation.json``."""
        return self.snapshot.validation_json

    # -- checks and neighbours -------------------------------------------------------------

    def require_validated(self) -> Manifest:
        """Return the manifest when the snapshot passed validation and is unchanged since (see :meth:`SnapshotDir.require_validated`)."""
        return self.snapshot.require_validated()

    def previous(self) -> RunFolder | None:
        """Return the newest earlier run folder of the same kind whose snapshot passed validation, if any."""
        folder = self.root / self.kind
        if not folder.is_dir():
            return None
        earlier: list[dt.date] = []
        for child in folder.iterdir():
            try:
                day = _iso_date(child.name, "run folder")
            except ValueError:
                continue  # not a run folder
            if child.is_dir() and day < self.as_of:
                earlier.append(day)
        for day in sorted(earlier, reverse=True):
            candidate = RunFolder(self.kind, day, self.root)
            if candidate.snapshot.passed_validation():
                return candidate
        return None

    def empty_model_dir(self) -> Path:
        """Remove what an earlier training of this run left in ``model/``; return the (new, empty) folder."""
        if self.model_dir.exists():
            shutil.rmtree(self.model_dir)
        self.model_dir.mkdir(parents=True)
        return self.model_dir


RunRef = RunFolder | Mapping[str, Any]
"""A run folder, or its :meth:`RunFolder.ref` mapping as XCom carries it (what steps accept)."""
