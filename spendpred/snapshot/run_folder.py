"""The run folder and the staging root: the one answer to "where is X in staging?".

:class:`RunFolder` (``kind``, ``as_of``, ``root``) names every file a run stages (the layout is
in :mod:`spendpred.snapshot`), travels through XCom as :meth:`RunFolder.ref`, finds the
previous validated run (:meth:`RunFolder.previous`), carries a training run's stacked
windows (:attr:`RunFolder.windows`, :meth:`RunFolder.window_folders`), places the embedding
cache beside the runs (:meth:`RunFolder.embedding_cache`), and on object storage moves each step's
files between a local working copy (:func:`working_copy`) and the URL, each set published
atomically under a staging manifest (``STAGED_SETS``, ``spendpred.staging``).
:func:`staging_root` is the staging root of the settings; :func:`local_path` reads a setting
that must name a local folder.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from spendpred.errors import ConfigError, DataError, ValidationFailed
from spendpred.snapshot.contract import MANIFEST_FILE, REPORT_FILES, SNAPSHOT_FILE, Manifest, SnapshotDir, _iso_date

if TYPE_CHECKING:
    from spendpred.config import Settings


def local_path(location: str | Path, setting: str = "SPENDPRED_STAGING_DIR") -> Path:
    """Return the local folder named by ``location``: a plain path or a ``file://`` URL.

    For settings that must name a local folder (staging itself accepts object storage too:
    :func:`staging_root`). Raises ``ConfigError`` for any other scheme or a remote ``file://`` host.
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


def staging_root(settings: Settings | None = None) -> Path | str:
    """Return the staging root: ``SPENDPRED_STAGING_DIR``, else ``<home>/staging``.

    A ``Path`` for a folder or ``file://`` URL, the normalised URL for object storage
    (``s3://``, ``gs://``, ``abfs://``; see ``spendpred.staging.parse_root``). Not created
    here (the rule is the settings': ``Settings.resolved_staging_dir``). Raises ``ConfigError``
    for an unsupported URL.
    """
    from spendpred.config import get_settings

    return (settings or get_settings()).resolved_staging_dir


# -- the run folder -------------------------------------------------------------------------

KINDS: tuple[str, ...] = ("train", "score")
WINDOW_KIND = "train-window"
"""The run folders of the earlier stacked training windows (``SPENDPRED_TRAIN_WINDOWS``): apart from
``train/``, so an experiment's windows never replace an ordinary run's snapshot nor count as one's
:meth:`RunFolder.previous`."""
FOLDER_KINDS: tuple[str, ...] = (*KINDS, WINDOW_KIND)
SHARDS_DIR = "shards"
TIERS_PARQUET = "tiers.parquet"
TIERS_JSON = "tiers.json"
REASONS_PARQUET = "reasons.parquet"
REASONS_JSON = "reasons.json"
MODEL_DIR = "model"
BUNDLE_DIR = "bundle"
EVALUATION_DIR = "evaluation"
TEST_PREDICTIONS = "test_predictions.parquet"
RESULT_JSON = "result.json"
REGISTERED_JSON = "registered.json"
EMBEDDING_CACHE_DIR = "embedding-cache"
"""The embedding cache's folder under the staging root (``<staging>/embedding-cache/<key>/``, :mod:`spendpred.embeddings`),
shared by every run and kind: see :func:`embedding_cache_dir` and :meth:`RunFolder.embedding_cache`."""


def embedding_cache_dir(staging: Path, key: str | None = None) -> Path:
    """``<staging>/embedding-cache`` of a local staging folder, or its ``<key>/`` folder with ``key``."""
    folder = Path(staging) / EMBEDDING_CACHE_DIR
    return folder / key if key is not None else folder


@dataclass(frozen=True)
class RunFolder:
    """Where one run (``kind`` ``train`` or ``score``, date ``as_of``) keeps its files under ``root``.

    ``root`` is a local folder (``Path``) or an object-storage URL (``str``). The paths below
    (``snapshot_dir``, ``shard_path``...) are local: under ``root`` itself, or for a URL under
    ``work``, the working copy :func:`working_copy` opens (a folder on a URL without one
    raises ``ConfigError``). :meth:`pull` and :meth:`push` move the files of one step between
    the working copy and the URL; with a local root they do nothing.

    ``windows`` (a training run's only) are the dates of its earlier stacked training windows
    (``SPENDPRED_TRAIN_WINDOWS``, :meth:`stacked`), newest first; each one's folder is
    :meth:`window_folders` (kind ``WINDOW_KIND``). They travel in :meth:`ref` as ``"windows"``.
    """

    kind: str
    as_of: dt.date
    root: Path | str
    work: Path | None = field(default=None, compare=False)
    windows: tuple[dt.date, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in FOLDER_KINDS:
            raise ConfigError(f"run kind {self.kind!r} is not one of {', '.join(FOLDER_KINDS)}")
        if not isinstance(self.as_of, dt.date) or isinstance(self.as_of, dt.datetime):
            raise ConfigError(
                f"as_of={self.as_of!r} must be a datetime.date: parse text once, at the front end (spendpred.params)"
            )
        from spendpred.staging import is_remote, parse_root

        object.__setattr__(self, "root", parse_root(self.root) if is_remote(self.root) else Path(self.root))
        if self.work is not None:
            object.__setattr__(self, "work", Path(self.work))
        windows = tuple(self.windows)
        if windows and self.kind != "train":
            raise ConfigError(f"a {self.kind} run folder has no stacked training windows: only a train run does")
        for day in windows:
            if not isinstance(day, dt.date) or isinstance(day, dt.datetime) or day >= self.as_of:
                raise ConfigError(
                    f"stacked window {day!r} of the run as of {self.as_of} must be an earlier datetime.date: "
                    "build the windows with RunFolder.stacked"
                )
        object.__setattr__(self, "windows", windows)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def for_date(cls, kind: str, as_of: dt.date, settings: Settings | None = None) -> RunFolder:
        """Return the run folder of ``kind`` and ``as_of`` under the configured staging root."""
        return cls(kind, as_of, staging_root(settings))

    @classmethod
    def from_ref(cls, ref: Mapping[str, Any]) -> RunFolder:
        """Return the run folder described by a :meth:`ref` mapping (other keys are ignored).

        ``windows`` (optional) lists the stacked training windows' dates. Raises ``ConfigError``
        when ``kind``, ``as_of`` or ``root`` is missing, or any of them or ``windows`` is malformed.
        """
        from spendpred.staging import parse_root

        missing = [key for key in ("kind", "as_of", "root") if not ref.get(key)]
        if missing:
            raise ConfigError(
                f"a run folder reference needs kind, as_of and root; {', '.join(missing)} missing in {dict(ref)!r}: "
                "pass the result of the previous step"
            )
        windows = ref.get("windows") or ()
        if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence):
            raise ConfigError(
                f"run folder reference {dict(ref)!r}: windows must be a list of dates: pass the result of the previous step"
            )
        try:
            as_of = _iso_date(ref["as_of"], "as_of")
            days = tuple(_iso_date(day, "windows") for day in windows)
        except ValueError as exc:
            raise ConfigError(f"run folder reference {dict(ref)!r}: {exc}: pass the result of the previous step") from exc
        return cls(str(ref["kind"]), as_of, parse_root(ref["root"]), windows=days)

    @classmethod
    def coerce(cls, run: RunFolder | Mapping[str, Any]) -> RunFolder:
        """Return ``run`` itself, or the run folder its :meth:`ref` mapping describes."""
        return run if isinstance(run, RunFolder) else cls.from_ref(run)

    @classmethod
    def containing(cls, snapshot_dir: Path, settings: Settings | None = None) -> RunFolder | None:
        """Return the run folder whose ``snapshot/`` is ``snapshot_dir``, or ``None`` for a folder outside (local) staging."""
        path = Path(snapshot_dir)
        if path.name != "snapshot" or path.parent.parent.name not in FOLDER_KINDS:
            return None
        root = staging_root(settings)
        if not isinstance(root, Path) or path.parent.parent.parent.resolve() != root.resolve():
            return None
        try:
            as_of = _iso_date(path.parent.name, "run folder")
        except ValueError:
            return None
        return cls(path.parent.parent.name, as_of, root)

    def ref(self) -> dict[str, Any]:
        """Return ``{"kind", "as_of", "root"}`` as JSON-able text (what XCom carries between tasks; a URL stays a URL).

        A run with stacked training windows adds ``"windows"``: their dates, newest first.
        """
        ref: dict[str, Any] = {"kind": self.kind, "as_of": self.as_of.isoformat(), "root": str(self.root)}
        if self.windows:
            ref["windows"] = [day.isoformat() for day in self.windows]
        return ref

    def on(self, as_of: dt.date) -> RunFolder:
        """The run folder of the same kind and root (and working copy) for another date (without stacked windows)."""
        return RunFolder(self.kind, as_of, self.root, self.work)

    def stacked(self, count: int, step_days: int) -> RunFolder:
        """This training run carrying ``count - 1`` earlier stacked windows, the k-th ``k * step_days`` days earlier.

        ``count`` is ``SPENDPRED_TRAIN_WINDOWS`` (1: no window), ``step_days`` ``SPENDPRED_WINDOW_STEP_DAYS``.
        Raises ``ConfigError`` for another kind of run.
        """
        days = tuple(self.as_of - dt.timedelta(days=k * int(step_days)) for k in range(1, int(count)))
        return RunFolder(self.kind, self.as_of, self.root, self.work, days)

    def window_folders(self) -> list[RunFolder]:
        """The run folders of this run's stacked training windows (:meth:`window` of each of ``windows``), newest first."""
        return [self.window(day) for day in self.windows]

    def window(self, as_of: dt.date) -> RunFolder:
        """The folder of a stacked training window as of ``as_of`` (kind ``WINDOW_KIND``, same root and working copy).

        Kept apart from ordinary runs: a window never counts as the :meth:`previous` snapshot of a
        training run, nor replaces the snapshot of an ordinary run of its date.
        """
        return RunFolder(WINDOW_KIND, as_of, self.root, self.work)

    # -- where things are -----------------------------------------------------------------

    @property
    def is_remote(self) -> bool:
        """Whether the root is object storage (a URL)."""
        return isinstance(self.root, str)

    @property
    def local_root(self) -> Path:
        """The local folder that stands for the root: the root itself, or the working copy of a URL."""
        if isinstance(self.root, Path):
            return self.root
        if self.work is None:
            raise ConfigError(
                f"run folder {self.location()} is on object storage: open a working copy first "
                "(spendpred.snapshot.working_copy) to read or write its files"
            )
        return self.work

    def embedding_cache(self, key: str | None = None) -> Path:
        """``<root>/embedding-cache[/<key>]``: the embedding cache beside the runs (in the working copy for a URL)."""
        return embedding_cache_dir(self.local_root, key)

    def embedding_cache_rel(self, key: str | None = None) -> str:
        """``embedding-cache[/<key>]`` relative to the staging root: the cache's folder on object storage."""
        return f"{EMBEDDING_CACHE_DIR}/{key}" if key is not None else EMBEDDING_CACHE_DIR

    def location(self, *parts: str) -> str:
        """Where ``<kind>/<as_of>/<parts>`` is, for messages and results: a URL on object storage, else a path."""
        rel = "/".join((self.kind, self.as_of.isoformat(), *parts))
        if isinstance(self.root, str):
            from spendpred.staging import join

            return join(self.root, rel)
        return str(self.root.joinpath(*rel.split("/")))

    @property
    def path(self) -> Path:
        """``<root>/<kind>/<as_of>`` (in the working copy when the root is a URL)."""
        return self.local_root / self.kind / self.as_of.isoformat()

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
    def reasons_parquet(self) -> Path:
        """``reasons.parquet``: the explained users' top reasons (``spendpred.explain.reasons_table``)."""
        return self.path / REASONS_PARQUET

    @property
    def reasons_json(self) -> Path:
        """``reasons.json``: which tiers the reasons explain (their SHA-256), the model version, scope, counts, cost."""
        return self.path / REASONS_JSON

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

    # -- staged sets: what each step writes together (object storage) -----------------------

    def staged_set(self, name: str, shard: int | None = None, shards: int | None = None) -> StagedSet:
        """The files one step writes together (``name`` in ``STAGED_SETS``; ``shard`` needs ``shard``/``shards``).

        Raises ``ConfigError`` for an unknown name.
        """
        if name == "shard":
            if shard is None or shards is None:
                raise ConfigError("the staged set 'shard' needs shard and shards")
            file = self.shard_path(shard, shards).name
            return StagedSet(SHARDS_DIR, file.removesuffix(".parquet"), (file,),
                             f"shard {int(shard)}/{int(shards)} has no complete file at {{url}}: rerun score_shard for it")  # fmt: skip
        if name not in STAGED_SETS:
            raise ConfigError(f"unknown staged set {name!r}: use one of {', '.join(STAGED_SETS)}, shard")
        return STAGED_SETS[name]

    def pull(self, *names: str, required: bool = True, only: Sequence[str] | None = None) -> list[str]:
        """Copy the staged sets ``names`` (see :meth:`staged_set`) into the working copy; return those that exist.

        Nothing happens with a local root. A set is pulled only through its complete staging
        manifest; a missing one raises the set's error (``DataError``/``ValidationFailed``
        naming the URL and the step to run) when ``required``. ``only`` limits the files.
        """
        if not self.is_remote:
            return list(names)
        found = []
        for name in names:
            found.extend(self.pull_set(self.staged_set(name), required=required, only=only))
        return found

    def pull_set(self, staged: StagedSet, required: bool = True, only: Sequence[str] | None = None) -> list[str]:
        """:meth:`pull` for one :class:`StagedSet` (a shard's); returns ``[staged.name]`` when it exists, else ``[]``."""
        if not self.is_remote:
            return [staged.name]
        from spendpred.staging import join_rel, store

        folder = join_rel(self.kind, self.as_of.isoformat(), staged.folder)
        local = self.path / staged.folder
        if store(str(self.root)).pull(local, folder, staged.name, only):
            return [staged.name]
        for name in staged.files or ():  # the working copy holds only what a reader may trust
            (local / name).unlink(missing_ok=True)
        if required:
            raise staged.error(self.location(staged.folder) if staged.folder else self.location())
        return []

    def push(self, *names: str, shard: int | None = None, shards: int | None = None) -> None:
        """Publish the staged sets ``names`` from the working copy (each atomically; see ``spendpred.staging``).

        Nothing happens with a local root. Pushing ``snapshot`` withdraws the old validation
        (it described another file); pushing ``model`` replaces the whole remote ``model/``.
        """
        if not self.is_remote:
            return
        from spendpred.staging import MANIFEST_SUFFIX, join_rel, local_files, store

        remote = store(str(self.root))
        run = join_rel(self.kind, self.as_of.isoformat())
        for name in names:
            staged = self.staged_set(name, shard, shards)
            folder = join_rel(run, staged.folder)
            local = self.path / staged.folder
            stale: list[str] = []
            if name == "snapshot":
                stale = [join_rel(folder, STAGED_SETS["validation"].name + MANIFEST_SUFFIX)]
            if name == "model":
                remote.delete_dir(folder)  # a rerun's model replaces the old one (registered.json included)
            files = list(staged.files) if staged.files is not None else local_files(local, skip=STAGED_SETS["registered"].files or ())
            remote.push(local, folder, staged.name, [f for f in files if (local / f).is_file()], stale=stale)

    # -- checks and neighbours -------------------------------------------------------------

    def require_validated(self) -> Manifest:
        """Return the manifest when the snapshot passed validation and is unchanged since (see :meth:`SnapshotDir.require_validated`)."""
        return self.snapshot.require_validated()

    def _earlier_dates(self) -> list[dt.date]:
        """The dates of this kind's run folders before ``as_of``, newest first (listed on object storage)."""
        if self.is_remote:
            from spendpred.staging import store

            names = store(str(self.root)).children(self.kind)
        else:
            folder = self.root / self.kind
            names = [c.name for c in folder.iterdir() if c.is_dir()] if folder.is_dir() else []
        earlier: list[dt.date] = []
        for name in names:
            try:
                day = _iso_date(name, "run folder")
            except ValueError:
                continue  # not a run folder
            if day < self.as_of:
                earlier.append(day)
        return sorted(earlier, reverse=True)

    def previous(self) -> RunFolder | None:
        """Return the newest earlier run folder of the same kind whose snapshot passed validation, if any.

        Only folders of this kind are listed: a training run never compares with a stacked
        window's snapshot (those live under ``WINDOW_KIND``, see :meth:`window`).

        On object storage only its manifest and validation reports are pulled into the working copy.
        """
        for day in self._earlier_dates():
            candidate = self.on(day)
            if candidate.is_remote:
                candidate.pull("validation", "snapshot", required=False, only=(MANIFEST_FILE, *REPORT_FILES))
            if candidate.snapshot.passed_validation():
                return candidate
        return None

    def empty_model_dir(self) -> Path:
        """Remove what an earlier training of this run left in ``model/``; return the (new, empty) folder."""
        if self.model_dir.exists():
            shutil.rmtree(self.model_dir)
        self.model_dir.mkdir(parents=True)
        return self.model_dir


@dataclass(frozen=True)
class StagedSet:
    """Files one step writes together into one folder of a run, published under one staging manifest.

    ``folder`` is relative to the run folder, ``name`` names the manifest
    (``<folder>/<name>.staged.json``), ``files`` are relative to ``folder`` (``None``: every
    file below it), ``missing`` the message (with ``{url}``) when a reader needs the set and it
    was never completely written.
    """

    folder: str
    name: str
    files: tuple[str, ...] | None
    missing: str
    error_class: type[Exception] = DataError

    def error(self, url: str) -> Exception:
        return self.error_class(self.missing.format(url=url))


STAGED_SETS: dict[str, StagedSet] = {
    "snapshot": StagedSet("snapshot", "snapshot", (SNAPSHOT_FILE, MANIFEST_FILE),
                          "no complete snapshot at {url}: run the extract step first (an extract that failed stages nothing)"),
    "validation": StagedSet("snapshot", "validation", REPORT_FILES,
                            "snapshot {url} has not been validated: run the validate step first", ValidationFailed),
    "model": StagedSet(MODEL_DIR, "model", None, "no complete trained model at {url}: run train_model first"),
    "registered": StagedSet(MODEL_DIR, "registered", (REGISTERED_JSON,),
                            "the model at {url} was not registered: run evaluate_and_register first"),
    "tiers": StagedSet("", "tiers", (TIERS_PARQUET, TIERS_JSON), "no complete tiers at {url}: run assign_tiers first"),
    "reasons": StagedSet("", "reasons", (REASONS_PARQUET, REASONS_JSON), "no complete reasons at {url}: run explain_scores first"),
}  # fmt: skip
"""What each step stages together (the shards' sets come from :meth:`RunFolder.staged_set`)."""


@contextmanager
def working_copy(run: RunFolder | Mapping[str, Any]) -> Iterator[RunFolder]:
    """Yield the run folder ready for local-file APIs: itself for a local root, else on a fresh temporary working copy.

    The working copy (``spendpred-staging-*`` in the temporary folder) starts empty, is filled
    by :meth:`RunFolder.pull` and removed when the block ends, whatever happened: nothing of
    staging stays on the worker. A run folder that already has one keeps it.
    """
    import tempfile

    run = RunFolder.coerce(run)
    if not run.is_remote or run.work is not None:
        yield run
        return
    work = Path(tempfile.mkdtemp(prefix="spendpred-staging-"))
    try:
        yield RunFolder(run.kind, run.as_of, run.root, work, run.windows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


RunRef = RunFolder | Mapping[str, Any]
"""A run folder, or its :meth:`RunFolder.ref` mapping as XCom carries it (what steps accept)."""
