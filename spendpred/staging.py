"""Staging on object storage: the remote root, its files and their staging manifests.

``SPENDPRED_STAGING_DIR`` is a folder, a ``file://`` URL, or an object-storage URL:
``s3://bucket/prefix`` (``pyarrow.fs.S3FileSystem``; credentials, region and endpoint from the
standard ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_DEFAULT_REGION``/``AWS_REGION`` and ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``),
``gs://bucket/prefix`` or ``abfs://container@account.dfs.core.windows.net/prefix`` (pyarrow's
GCS and Azure filesystems, else fsspec's ``gcsfs``/``adlfs`` when installed). :func:`parse_root`
is the one place that reads it.

Every stage works with local-file APIs (Parquet, Great Expectations, torch, MLflow), so a run
folder on object storage is used through a *working copy*: a temporary local folder that a step
fills with what it reads (:meth:`Store.pull`) and whose new files it publishes when it is done
(:meth:`Store.push`). ``spendpred.snapshot.RunFolder`` knows which files make up what (the
layout); this module only moves files and checks them.

Publishing is atomic per *set* (the files one step writes together), like the local folder's
``os.replace``: the set's old staging manifest is deleted first, each file is uploaded under a
hidden temporary key and then moved to its name (a failed upload never leaves a partial object
under a real name), and the staging manifest ``<folder>/<set>.staged.json`` (each file's size
and SHA-256) is written last, the same way. A reader trusts a set only through its manifest:
no manifest, nothing is pulled; a file that does not match its manifest is refused. So a task
that fails mid-write leaves no manifest a reader would trust.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from spendpred.errors import ConfigError, DataError, StorageError, TransientError
from spendpred.files import sha256_file, temporary_sibling

logger = logging.getLogger(__name__)

SCHEMES: tuple[str, ...] = ("s3", "gs", "abfs")
"""The object-storage URL schemes staging accepts (``gcs``, ``abfss`` and ``az`` are aliases)."""
_ALIASES = {"gcs": "gs", "abfss": "abfs", "az": "abfs"}
MANIFEST_SUFFIX = ".staged.json"
FORMAT = "spendpred-staged/1"
SETTING = "SPENDPRED_STAGING_DIR"


class StagingUnavailable(StorageError, TransientError):
    """Object storage could not be reached (network, endpoint, throttling): a retry may pass."""


# -- the root -------------------------------------------------------------------------------


def is_remote(location: str | Path) -> bool:
    """Return whether ``location`` is an object-storage URL (any scheme but ``file`` and a drive letter)."""
    if isinstance(location, Path):
        return False
    scheme = urlsplit(str(location).strip()).scheme
    return len(scheme) > 1 and scheme != "file"


def parse_root(location: str | Path, setting: str = SETTING) -> Path | str:
    """Return the staging root named by ``location``: a ``Path`` for a folder or ``file://`` URL,
    the normalised URL (``scheme://bucket/prefix``, no trailing slash) for object storage.

    Raises ``ConfigError`` naming ``setting`` for an unknown scheme, a URL without a bucket,
    a remote ``file://`` host, or a scheme whose filesystem is not installed.
    """
    text = str(location).strip()
    parts = urlsplit(text)
    if isinstance(location, Path) or not parts.scheme or (len(parts.scheme) == 1 and text[1:3] in (":\\", ":/")):
        return Path(text).expanduser()  # a plain path (a Windows drive letter is not a scheme)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{setting}={text!r} names the host {parts.netloc!r}: use file:///absolute/path or a plain path")
        return Path(url2pathname(unquote(parts.path)))
    scheme = _ALIASES.get(scheme, scheme)
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{setting}={text!r}: staging on {parts.scheme}:// is not supported: use a folder, a file:// URL or "
            "object storage (s3://bucket/prefix, gs://bucket/prefix, abfs://container@account.dfs.core.windows.net/prefix)"
        )
    if not parts.netloc:
        raise ConfigError(f"{setting}={text!r} names no bucket: use {scheme}://bucket/prefix")
    prefix = parts.path.strip("/")
    return f"{scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")


def join(root: str, *parts: str) -> str:
    """Return the URL of ``parts`` (``/``-separated, relative) under the URL ``root``."""
    rel = "/".join(p.strip("/") for p in parts if p and p.strip("/"))
    return f"{root}/{rel}" if rel else root


# -- traffic --------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Bytes and files moved to and from object storage by this process (for logs and ``bench/``)."""

    uploaded_bytes: int = 0
    downloaded_bytes: int = 0
    uploaded_files: int = 0
    downloaded_files: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, up: int = 0, down: int = 0) -> None:
        with self._lock:
            if up:
                self.uploaded_bytes += up
                self.uploaded_files += 1
            if down:
                self.downloaded_bytes += down
                self.downloaded_files += 1

    def as_dict(self) -> dict[str, int]:
        return {"uploaded_bytes": self.uploaded_bytes, "downloaded_bytes": self.downloaded_bytes,
                "uploaded_files": self.uploaded_files, "downloaded_files": self.downloaded_files}  # fmt: skip


TRAFFIC = Traffic()
"""What this process moved (read it with ``TRAFFIC.as_dict()``; the counters only grow)."""


# -- the filesystem of a URL ----------------------------------------------------------------


def _s3_filesystem() -> Any:
    """``pyarrow.fs.S3FileSystem`` configured from the standard AWS variables.

    pyarrow reads the credentials itself; the endpoint (``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL``: MinIO, Ceph, a local test server) and the region are passed
    explicitly, since pyarrow 25 does not read ``AWS_ENDPOINT_URL``.
    """
    from pyarrow import fs

    kwargs: dict[str, Any] = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "").strip()
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.netloc:
            raise ConfigError(f"AWS_ENDPOINT_URL={endpoint!r} is not a URL: use e.g. http://127.0.0.1:9000")
        kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        kwargs["scheme"] = parts.scheme
    return fs.S3FileSystem(**kwargs)


def _filesystem(url: str) -> tuple[Any, str]:
    """Return ``(pyarrow.fs.FileSystem, base path)`` for a root URL from :func:`parse_root`."""
    from pyarrow import fs

    parts = urlsplit(url)
    if parts.scheme == "s3":
        return _s3_filesystem(), f"{parts.netloc}{parts.path}".rstrip("/")
    try:
        return fs.FileSystem.from_uri(url)
    except (OSError, ValueError, NotImplementedError) as pyarrow_error:
        try:  # a pyarrow built without this filesystem: fsspec's implementation, when installed
            import fsspec
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            implementation, base = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"{SETTING}={url!r}: no filesystem for {parts.scheme}:// is available (pyarrow: {pyarrow_error}; "
                f"fsspec: {exc}): install {'gcsfs' if parts.scheme == 'gs' else 'adlfs'} or use s3://"
            ) from None
        return PyFileSystem(FSSpecHandler(implementation)), base.rstrip("/")


def _describe_os_error(exc: OSError, url: str) -> StorageError:
    """The one-line ``StorageError`` for a failed object-storage call (transient when the network is at fault)."""
    text = " ".join(str(exc).split())
    transient = any(
        marker in text
        for marker in ("NETWORK_CONNECTION", "Could not resolve", "Couldn't connect", "Connection refused", "curlCode",
                       "Timeout", "timed out", "SLOW_DOWN", "ServiceUnavailable", "InternalError", "503")
    )  # fmt: skip
    if transient:
        return StagingUnavailable(
            f"staging {url} cannot be reached ({text[:300]}): check AWS_ENDPOINT_URL / the network; the task is retried"
        )
    return StorageError(
        f"staging {url} cannot be used ({text[:300]}): check the bucket exists and the credentials "
        f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or the gs/abfs equivalents) may read and write it, or set {SETTING} elsewhere"
    )


_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def store(url: str) -> Store:
    """Return the (cached, per process) :class:`Store` of an object-storage root URL."""
    url = str(parse_root(url))
    with _STORES_LOCK:
        if url not in _STORES:
            filesystem, base = _filesystem(url)
            _STORES[url] = Store(url, filesystem, base)
        return _STORES[url]


# -- the store ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """An object-storage root: ``url`` (``s3://bucket/prefix``), its pyarrow filesystem and base path.

    Paths given to its methods are ``/``-separated and relative to the root.
    """

    url: str
    fs: Any = field(repr=False)
    base: str

    def key(self, rel: str) -> str:
        """The filesystem path of ``rel`` under the root."""
        rel = rel.strip("/")
        return f"{self.base}/{rel}" if rel else self.base

    def url_of(self, rel: str) -> str:
        """The URL of ``rel`` under the root (for messages and references)."""
        return join(self.url, rel)

    @contextmanager
    def _errors(self, rel: str = "") -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise _describe_os_error(exc, self.url_of(rel)) from None

    # -- plain operations --------------------------------------------------------------------

    def is_file(self, rel: str) -> bool:
        """Whether an object exists at ``rel``."""
        from pyarrow import fs

        with self._errors(rel):
            return self.fs.get_file_info(self.key(rel)).type == fs.FileType.File

    def children(self, rel: str) -> list[str]:
        """The names directly under ``rel`` (folders and files), sorted; empty when there is nothing."""
        from pyarrow import fs

        with self._errors(rel):
            infos = self.fs.get_file_info(fs.FileSelector(self.key(rel), allow_not_found=True))
        return sorted(info.base_name for info in infos)

    def files_under(self, rel: str) -> list[str]:
        """Every file below ``rel`` (recursively), as paths relative to ``rel``, sorted."""
        from pyarrow import fs

        prefix = self.key(rel) + "/"
        with self._errors(rel):
            infos = self.fs.get_file_info(fs.FileSelector(self.key(rel), recursive=True, allow_not_found=True))
        return sorted(i.path[len(prefix):] for i in infos if i.type == fs.FileType.File and i.path.startswith(prefix))

    def read_bytes(self, rel: str) -> bytes | None:
        """The content of ``rel``, or ``None`` when there is no such object."""
        if not self.is_file(rel):
            return None
        with self._errors(rel), self.fs.open_input_stream(self.key(rel)) as stream:
            data = stream.read()
        TRAFFIC.add(down=len(data) or 1)
        return data

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` through a temporary key (see :meth:`upload`)."""
        self._publish(rel, lambda out: out.write(data))
        TRAFFIC.add(up=len(data) or 1)

    def upload(self, local: Path, rel: str) -> int:
        """Copy the local file to ``rel``: under a hidden temporary key first, then moved; return its size."""

        def copy(out: Any) -> None:
            with open(local, "rb") as handle:
                shutil.copyfileobj(handle, out, 8 << 20)

        self._publish(rel, copy)
        size = Path(local).stat().st_size
        TRAFFIC.add(up=size or 1)
        return size

    def _publish(self, rel: str, write: Any) -> None:
        """Write an object under ``.<name>.tmp-<id>`` beside ``rel``, then move it to ``rel``.

        Closing a stream completes the upload even after an error, so the object is written
        where no reader looks and moved only once complete; on failure it is deleted.
        """
        folder, _, name = rel.strip("/").rpartition("/")
        tmp = f"{folder}/.{name}.tmp-{uuid.uuid4().hex[:12]}" if folder else f".{name}.tmp-{uuid.uuid4().hex[:12]}"
        with self._errors(rel):
            try:
                with self.fs.open_output_stream(self.key(tmp)) as out:
                    write(out)
                self._move(tmp, rel)
            except BaseException:
                self.delete(tmp, quiet=True)
                raise

    def _move(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst`` (a server-side copy and delete where the store has no rename)."""
        try:
            self.fs.move(self.key(src), self.key(dst))
        except NotImplementedError:
            self.fs.copy_file(self.key(src), self.key(dst))
            self.fs.delete_file(self.key(src))

    def download(self, rel: str, local: Path) -> int:
        """Copy ``rel`` to the local file (written beside it, then renamed); return its size."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(local)
        try:
            with self._errors(rel), self.fs.open_input_stream(self.key(rel)) as stream, open(tmp, "wb") as out:
                shutil.copyfileobj(stream, out, 8 << 20)
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        size = local.stat().st_size
        TRAFFIC.add(down=size or 1)
        return size

    def delete(self, rel: str, quiet: bool = False) -> None:
        """Delete the object at ``rel`` (nothing when it is missing); ``quiet`` logs a failure instead of raising."""
        from pyarrow import fs

        try:
            with self._errors(rel):
                if self.fs.get_file_info(self.key(rel)).type == fs.FileType.File:
                    self.fs.delete_file(self.key(rel))
        except StorageError as exc:
            if not quiet:
                raise
            logger.warning("could not delete %s: %s", self.url_of(rel), exc)

    def delete_dir(self, rel: str) -> None:
        """Delete everything below ``rel`` (nothing when it is missing)."""
        from pyarrow import fs

        with self._errors(rel):
            if self.fs.get_file_info(self.key(rel)).type == fs.FileType.Directory:
                self.fs.delete_dir(self.key(rel))

    def probe(self, rel: str) -> None:
        """Write and delete a small object under ``rel``: raises ``StorageError``/``StagingUnavailable`` when staging cannot be used."""
        marker = f"{rel.strip('/')}/.spendpred-probe-{uuid.uuid4().hex[:12]}"
        self.write_bytes(marker, b"probe")
        self.delete(marker)

    # -- sets: publishing and trusting --------------------------------------------------------

    def manifest(self, folder: str, name: str) -> dict[str, Any] | None:
        """The staging manifest ``<folder>/<name>.staged.json``, or ``None`` when it is missing.

        Raises ``DataError`` for a manifest that is not one (it cannot be half-written: it is
        moved into place whole).
        """
        rel = join_rel(folder, name + MANIFEST_SUFFIX)
        data = self.read_bytes(rel)
        if data is None:
            return None
        try:
            manifest = json.loads(data)
            files = manifest["files"]
            if manifest.get("format") != FORMAT or not isinstance(files, dict):
                raise ValueError(f"format {manifest.get('format')!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{self.url_of(rel)} is not a staging manifest ({exc}): rerun the step that writes it") from None
        return manifest

    def push(self, local: Path, folder: str, name: str, names: Sequence[str], stale: Iterable[str] = ()) -> dict[str, Any]:
        """Publish the local files ``names`` (relative to the local folder ``local``) to ``folder``.

        Order: the set's manifest and the ``stale`` objects (other sets' manifests that no
        longer describe the folder) are deleted, every file goes up under a temporary key and
        is moved to its name, then ``<folder>/<name>.staged.json`` is written, last. Returns
        the manifest.
        """
        marker = join_rel(folder, name + MANIFEST_SUFFIX)
        self.delete(marker)
        for rel in stale:
            self.delete(rel)
        files: dict[str, dict[str, Any]] = {}
        for rel in names:
            path = Path(local) / rel
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
            self.upload(path, join_rel(folder, rel))
        manifest = {"format": FORMAT, "files": files, "host": socket.gethostname(),
                    "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
        self.write_bytes(marker, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        logger.info("staged %d file(s) to %s (%s)", len(files), self.url_of(folder), name)
        return manifest

    def pull(self, local: Path, folder: str, name: str, only: Sequence[str] | None = None) -> bool:
        """Copy the files of the set ``name`` in ``folder`` into the local folder; return whether the set exists.

        Only a set with a staging manifest is pulled (``False`` without one: it was never
        written completely). ``only`` limits the files (those the manifest lists). A local file
        that already has the manifest's checksum is kept. Raises ``DataError`` when a file is
        missing or does not match the manifest (it changed after the manifest was written).
        """
        manifest = self.manifest(folder, name)
        if manifest is None:
            return False
        wanted = manifest["files"] if only is None else {k: v for k, v in manifest["files"].items() if k in set(only)}
        for rel, expected in sorted(wanted.items()):
            path = Path(local) / rel
            if path.is_file() and path.stat().st_size == expected["size"] and sha256_file(path) == expected["sha256"]:
                continue
            source = join_rel(folder, rel)
            if not self.is_file(source):
                raise DataError(f"{self.url_of(source)} is missing but its staging manifest lists it: rerun the step that writes it")
            self.download(source, path)
            actual = sha256_file(path)
            if actual != expected["sha256"]:
                path.unlink(missing_ok=True)
                raise DataError(
                    f"{self.url_of(source)} does not match its staging manifest (sha256 {actual[:12]}… is not "
                    f"{str(expected['sha256'])[:12]}…): it was replaced after the manifest was written; rerun the step that writes it"
                )
        return True


def join_rel(*parts: str) -> str:
    """Join ``/``-separated relative paths, skipping empty parts."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def local_files(folder: Path, skip: Iterable[str] = ()) -> list[str]:
    """Every file below ``folder`` as a ``/``-separated relative path, sorted (staging manifests and ``skip`` left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    skipped = set(skip)
    return sorted(
        rel
        for rel in (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        if rel not in skipped and not rel.endswith(MANIFEST_SUFFIX)
    )
