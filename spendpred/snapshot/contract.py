"""The snapshot contract: its files and columns, the manifest, :class:`SnapshotDir`, writing one atomically.

A *snapshot* is a folder holding ``snapshot.parquet`` (one row per user: ``user_id``, ``text``,
``FEATURE_COLUMNS``, ``past_spend`` and, for training, ``label``), its ``manifest.json`` and,
once checked, ``validation.json``/``validation.md``. ``spendpred.behaviour`` writes it (inside
:func:`staged_snapshot`), ``spendpred.validation`` checks it, everything else reads it through
:class:`SnapshotDir` (:meth:`SnapshotDir.require_validated`: passed validation and unchanged since).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from spendpred.errors import ConfigError, DataError, ValidationFailed
from spendpred.files import read_json, sha256_file, write_json_atomic

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
    (``NotADirectoryError`` when a file is in the way); ``spendpred.failures.describe`` words it.
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
