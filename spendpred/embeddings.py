"""The embedding cache: each user's pooled encoder output, reused while their text is unchanged.

The encoder is nearly all of a night's scoring cost, and with text template v2 a user's text
changes only when they act (about 5% of users a day). The nightly shard task therefore
encodes only users whose text is new or changed, takes everyone else's pooled embedding from
the cache, runs the (cheap) head for every user with today's features, and writes the cache
back. A user's published score is the same bit for bit with or without the cache: the
cached row is exactly what :meth:`SpendModel.encode` returned for that text with the same
encoder, precision and batch shape (fixed-shape batches make it independent of the other
users encoded with it).

Layout, beside the staging runs::

    <staging>/embedding-cache/<key>/bucket-<b>-of-64.parquet
        user_id (string), text_sha256 (binary 32), embedding (fixed_size_list<float32>[hidden]),
        checksum (binary 16: the first 16 bytes of SHA-256 over user_id, text_sha256 and the
        embedding's little-endian bytes)

``<key>`` names the model (registered version and a digest of its bundle's file checksums),
the file format and everything else the embedding depends on (precision, batch size, device
type), so a new champion, or a setting that changes the encoder output, starts a fresh cache;
:func:`prune` removes the other keys once a run has finished with one.

One file per user bucket (``splits.shard_bucket``: a fixed 64 buckets, whatever the shard
count). Shard ``i`` of ``n`` holds the buckets ``b % n == i`` (``splits.shard_of``), so it
reads and replaces only its own buckets' files (:func:`shard_files`), no two shards ever write
one file, and a change of shard count keeps every user's cached row. The snapshot is sorted by
``user_id`` (byte order) and so is each file: a shard reads its files in step with the
snapshot, a small batch of each at a time, so memory stays flat whatever the number of users.
Each file is replaced atomically (written under a temporary name, then renamed) after its
shard has scored; its size is bounded by ``SPENDPRED_EMBEDDING_CACHE_MAX_MB`` / 64 (users past
the bound are simply not cached).

The cache is an optimisation in every failure. Every row read is verified (checksum, finite
values) before it is used, and a row that fails is a miss; a file that cannot be read, is
truncated, or was written for another model, format or bucket is not used; a cache path that
is a file instead of a folder is removed; a folder that cannot be written (read-only, disk
full) leaves the old files as they were. In each case every user is still scored, the users
concerned are encoded, and the shard logs one warning naming the problem and the fix when it
ends; damaged files are rewritten by the same night. int8 scoring is never cached (its
quantisation depends on the batch, so a cached row would not equal a fresh one).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spendpred.files import open_parquet
from spendpred.snapshot.run_folder import EMBEDDING_CACHE_DIR, embedding_cache_dir
from spendpred.splits import SHARD_BUCKETS, shard_bucket, shard_buckets

logger = logging.getLogger(__name__)

CACHE_DIRNAME = EMBEDDING_CACHE_DIR  # the staging layout is the run folder's (spendpred.snapshot.RunFolder.embedding_cache)
FORMAT = "spendpred-embedding-cache/2"
_META_KEY = b"spendpred"
_READ_BATCH = 1_024
"""Rows read from one bucket file at a time (a shard reads up to 64 files side by side)."""
CHECKSUM_BYTES = 16
_ROW_OVERHEAD = 32 + CHECKSUM_BYTES + 24
"""Bytes per cached row besides the embedding: text digest, checksum, user id and offsets."""
_TEMP_GRACE_SECONDS = 6 * 3600
"""A temporary file younger than this may belong to a shard still writing: :func:`prune` keeps it."""
_MAX_LISTED = 3


def text_digests(texts: Sequence[str]) -> list[bytes]:
    """Return the sha256 digest (32 bytes) of each text's UTF-8 bytes."""
    sha = hashlib.sha256
    return [sha(text.encode("utf-8")).digest() for text in texts]


def row_checksums(user_ids: Sequence[str], digests: Sequence[bytes], embeddings: np.ndarray) -> list[bytes]:
    """Return each cached row's checksum: the first 16 bytes of SHA-256(user_id, 0, text digest, embedding bytes).

    ``embeddings`` is an ``(n, hidden)`` array, hashed as little-endian float32.
    """
    values = np.ascontiguousarray(embeddings, dtype="<f4")
    width = values.shape[1] * 4 if values.ndim == 2 else 0
    raw = memoryview(values).cast("B") if values.size else memoryview(b"")
    sha = hashlib.sha256
    return [
        sha(b"".join((str(uid).encode("utf-8"), b"\0", digest, raw[i * width : (i + 1) * width]))).digest()[:CHECKSUM_BYTES]
        for i, (uid, digest) in enumerate(zip(user_ids, digests, strict=True))
    ]


def cache_key(model_version: str, model_meta: dict[str, Any], precision: str, batch_size: int | None, device: str) -> str:
    """Return the cache folder name for a model version, the cache format and the settings its embeddings depend on."""
    files = model_meta.get("files") or {}
    digest = hashlib.sha256(
        json.dumps(
            {"files": files, "max_length": model_meta.get("max_length"), "precision": precision,
             "batch_size": batch_size, "device": device, "format": FORMAT},
            sort_keys=True,
        ).encode("utf-8")
    ).hexdigest()[:16]
    safe = "".join(ch if ch.isalnum() else "-" for ch in str(model_version))
    return f"v{safe}-{digest}"
@dataclass
class CacheStats:
    """What the cache did for one shard (or, added up, for a run)."""

    users: int = 0
    hits: int = 0
    misses: int = 0
    encode_seconds: float = 0.0
    cache_state: str = "off"
    written: int = 0
    key: str | None = None
    totals: dict[str, Any] | None = None
    """The shard's total predicted spend and forecast (``spendpred.shards.Totals``), not part of :meth:`as_dict`."""

    @property
    def hit_rate(self) -> float | None:
        return None if self.users == 0 else self.hits / self.users

    def as_dict(self) -> dict[str, Any]:
        return {"users": self.users, "hits": self.hits, "misses": self.misses,
                "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
                "encode_seconds": round(self.encode_seconds, 3), "cache": self.cache_state, "written": self.written, "key": self.key}  # fmt: skip

    @classmethod
    def total(cls, parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Add up shard results' ``as_dict`` forms into the run's figures."""
        total = cls(cache_state=",".join(sorted({str(p.get("cache", "off")) for p in parts})) or "off")
        for p in parts:
            total.users += int(p.get("users", 0))
            total.hits += int(p.get("hits", 0))
            total.misses += int(p.get("misses", 0))
            total.encode_seconds += float(p.get("encode_seconds", 0.0))
            total.written += int(p.get("written", 0))
        keys = {p.get("key") for p in parts}
        total.key = keys.pop() if len(keys) == 1 else None
        return total.as_dict()


@dataclass
class _BucketFile:
    """One bucket's cache file: its reader (rows in ``user_id`` order), the rows read ahead, its replacement."""

    bucket: int
    path: Path
    hidden: int
    reader: Iterator[Any] | None = None
    ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    sha: list[bytes] = field(default_factory=list)
    sums: list[bytes] = field(default_factory=list)
    emb: np.ndarray | None = None
    rows_read: int = 0
    damaged: bool = False
    writer: Any = None
    tmp: Path | None = None
    written: int = 0

    def __post_init__(self) -> None:
        self.emb = np.zeros((0, self.hidden), dtype=np.float32)

    def drop_through(self, last: str) -> None:
        """Forget the rows read ahead up to ``last`` (every later lookup asks for larger ids)."""
        upto = int(np.searchsorted(self.ids, last, side="right")) if len(self.ids) else 0
        self.ids, self.sha, self.sums, self.emb = self.ids[upto:], self.sha[upto:], self.sums[upto:], self.emb[upto:]  # type: ignore[index]

    def close_writer(self) -> None:
        """Close and delete the replacement being written, if any (never raises)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - already failing; the temporary file goes anyway
                pass
            self.writer = None
        if self.tmp is not None:
            try:
                self.tmp.unlink(missing_ok=True)
            except OSError:
                pass
            self.tmp = None


@dataclass
class ShardCache:
    """One shard's part of the cache: its buckets' files read in step with the snapshot, and their replacements.

    ``folder`` is ``<staging>/embedding-cache/<key>``, ``hidden`` the embedding width,
    ``max_rows`` the most rows one bucket's new file may hold. Use :meth:`lookup` for each
    snapshot batch in order, :meth:`add` for the batch's embeddings, then :meth:`commit` (or
    :meth:`discard`). Nothing here raises for a damaged or unwritable cache: it is noted,
    the users concerned are misses, and one warning is logged at :meth:`commit` or :meth:`discard`.
    ``state`` is ``cold`` (no file), ``warm``, then after :meth:`commit` ``repaired`` when
    something was wrong and the files were rewritten, or ``unwritable``.
    """

    folder: Path
    key: str
    hidden: int
    shard: int = 0
    shards: int = 1
    max_rows: int = 0
    state: str = "cold"
    written: int = 0
    _files: dict[int, _BucketFile] = field(default_factory=dict, repr=False)
    _reading: bool = field(default=True, repr=False)
    _writing: bool = field(default=True, repr=False)
    _write_error: str | None = field(default=None, repr=False)
    _problems: list[str] = field(default_factory=list, repr=False)
    _fixes: list[str] = field(default_factory=list, repr=False)
    _bad_files: dict[str, list[tuple[str, str]]] = field(default_factory=dict, repr=False)
    _row_faults: dict[str, Counter[str]] = field(default_factory=dict, repr=False)
    _last_id: str | None = field(default=None, repr=False)
    _memo: tuple[Any, np.ndarray, list[bytes | None]] | None = field(default=None, repr=False)
    _reported: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        for bucket in shard_buckets(self.shard, self.shards):
            self._files[bucket] = _BucketFile(bucket, self.folder / bucket_name(bucket), self.hidden)
        try:
            self._prepare_folders()
            for file in self._files.values():
                if os.path.lexists(file.path):
                    self._open(file)
        except OSError as exc:  # e.g. a folder that cannot be listed: no cache tonight
            self._reading = self._writing = False
            self._write_error = _describe(exc)
            self._note(f"it cannot be opened ({self._write_error})", f"make {self.folder.parent} a readable, writable folder")
        if any(file.reader is not None for file in self._files.values()):
            self.state = "warm"

    # -- problems: noted as they are found, one warning at the end -----------------------------
    def _note(self, problem: str, fix: str) -> None:
        self._problems.append(problem)
        if fix not in self._fixes:
            self._fixes.append(fix)

    def _damaged(self, file: _BucketFile, what: str, detail: str) -> None:
        """A file that cannot be used (any more): the rest of it is ignored and it is rewritten."""
        file.damaged = True
        file.reader = None
        self._bad_files.setdefault(what, []).append((file.path.name, detail))

    def _row_fault(self, file: _BucketFile, what: str) -> None:
        """A cached row that failed a check: a miss, its user encoded."""
        self._row_faults.setdefault(what, Counter())[file.path.name] += 1

    @property
    def _rewrite_fix(self) -> str:
        return f"none needed, the cache rewrites what it could not use (if this recurs, check the disk under {self.folder.parent})"

    def _report(self) -> None:
        """Log the one warning of this shard, if anything was wrong (once)."""
        for what, files in self._bad_files.items():
            name, detail = files[0]
            many = f"{len(files)} files {what} (first {name}: {detail})"
            self._note(f"{name}: {what} ({detail})" if len(files) == 1 else many, self._rewrite_fix)
        for what, counts in self._row_faults.items():
            rows, where = sum(counts.values()), next(iter(counts)) if len(counts) == 1 else f"{len(counts)} files"
            self._note(f"{rows} cached row(s) in {where} {what}", self._rewrite_fix)
        self._bad_files.clear()
        self._row_faults.clear()
        if self._reported or not self._problems:
            return
        self._reported = True
        listed = "; ".join(self._problems[:_MAX_LISTED])
        if len(self._problems) > _MAX_LISTED:
            listed += f"; and {len(self._problems) - _MAX_LISTED} more"
        outcome = (
            "The cache was not written, so tonight's new embeddings are encoded again next night"
            if self._write_error
            else "The cache was rewritten"
        )
        logger.warning(
            "embedding cache %s (shard %d of %d): %s. Scores are unaffected: the users concerned were encoded. %s. Fix: %s.",
            self.folder, self.shard, self.shards, listed, outcome, "; ".join(self._fixes),
        )  # fmt: skip

    # -- the folders ---------------------------------------------------------------------------
    def _prepare_folders(self) -> None:
        """Remove a plain file (or dangling link) where the cache's folders belong; note it."""
        for path in (self.folder.parent, self.folder):
            if path.is_dir() or not os.path.lexists(path):
                continue
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError):
                continue  # another shard repaired it at the same time
            except OSError as exc:
                self._writing = False
                self._write_error = _describe(exc)
                self._note(f"{path} is a file, not a folder, and could not be removed", f"remove the file {path}")
                return
            self._note(
                f"{path} was a file, not a folder: it was removed",
                f"none needed, the cache starts again (keep other files out of {self.folder.parent})",
            )

    # -- reading -------------------------------------------------------------------------------
    def _open(self, file: _BucketFile) -> None:
        try:
            parquet = open_parquet(file.path)
            schema = parquet.schema_arrow
            meta = json.loads((schema.metadata or {}).get(_META_KEY, b"{}"))
            if (
                not schema.remove_metadata().equals(_schema(self.hidden).remove_metadata())
                or meta.get("format") != FORMAT
                or meta.get("key") != self.key
                or meta.get("bucket") != file.bucket
            ):
                found = {k: meta.get(k) for k in ("format", "key", "bucket")} if meta else "no spendpred metadata"
                self._damaged(file, "foreign: written for another model, format or bucket", f"found {found}")
                return
        except Exception as exc:  # noqa: BLE001 - any unreadable file only costs time
            self._damaged(file, "unreadable", _describe(exc))
            return
        file.reader = parquet.iter_batches(batch_size=_READ_BATCH, columns=["user_id", "text_sha256", "embedding", "checksum"])

    def _pull(self, file: _BucketFile) -> bool:
        """Append the file's next rows to those read ahead; False when it is exhausted or broken."""
        if file.reader is None:
            return False
        try:
            batch = next(file.reader)
        except StopIteration:
            file.reader = None
            return False
        except Exception as exc:  # noqa: BLE001 - a corrupt page: the rest of the file is ignored
            self._damaged(file, "unreadable", f"past row {file.rows_read:,}: {_describe(exc)}")
            return False
        if any(column.null_count for column in batch.columns):
            self._damaged(file, "malformed", f"nulls after row {file.rows_read:,}")
            return False
        emb_col = batch.column(2)
        emb = emb_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if emb.size != batch.num_rows * self.hidden:
            self._damaged(file, "malformed", f"wrong embedding width after row {file.rows_read:,}")
            return False
        file.rows_read += batch.num_rows
        file.ids = np.concatenate([file.ids, batch.column(0).to_numpy(zero_copy_only=False).astype(object)])
        file.sha = file.sha + batch.column(1).to_pylist()
        file.sums = file.sums + batch.column(3).to_pylist()
        file.emb = np.concatenate([file.emb, emb.reshape(batch.num_rows, self.hidden)])  # type: ignore[list-item]
        return True

    def lookup(self, user_ids: np.ndarray, digests: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(hit_mask, embeddings of the hits)`` for a batch of users in ascending ``user_id`` order.

        A hit is a cached row of the same user and text digest whose checksum holds and whose
        values are finite; any other cached row of the user is a miss (a failed check is noted).
        A batch out of order (the snapshot is sorted, so this means something changed) turns
        reading off for the rest of the shard: everyone after it is encoded.
        """
        n = len(user_ids)
        hits = np.zeros(n, dtype=bool)
        if not self._reading and not self._writing:
            return hits, np.zeros((0, self.hidden), dtype=np.float32)
        found = np.zeros((n, self.hidden), dtype=np.float32)
        buckets = shard_bucket(user_ids)
        sums: list[bytes | None] = [None] * n
        self._memo = (user_ids, buckets, sums)
        if n == 0 or not self._reading:
            return hits, found[:0]
        first, last = str(user_ids[0]), str(user_ids[-1])
        ordered = n < 2 or bool(np.all(user_ids[:-1] <= user_ids[1:]))
        if not ordered or (self._last_id is not None and first <= self._last_id):
            self._reading = False
            self._note(
                "the snapshot's users are not in ascending user_id order, so the cache was read no further",
                "extract the snapshot again (`spendpred extract`): it is written sorted",
            )
            return hits, found[:0]
        self._last_id = last
        for bucket in np.unique(buckets).tolist():
            file = self._files.get(int(bucket))
            if file is None:
                continue  # not this shard's bucket: never read, never written
            rows = np.flatnonzero(buckets == bucket)
            self._match(file, rows, user_ids, digests, last, hits, found, sums)
        return hits, found[hits]

    def _match(self, file: _BucketFile, rows: np.ndarray, user_ids: np.ndarray, digests: Sequence[bytes], last: str,
               hits: np.ndarray, found: np.ndarray, sums: list[bytes | None]) -> None:  # fmt: skip
        """Fill ``hits``, ``found`` and ``sums`` for the batch's ``rows`` that fall in ``file``'s bucket."""
        while (len(file.ids) == 0 or file.ids[-1] <= last) and self._pull(file):
            pass
        if len(file.ids) == 0:
            return
        position = {uid: j for j, uid in enumerate(file.ids)}
        pairs = [(int(r), position[user_ids[r]]) for r in rows if user_ids[r] in position]
        if pairs:
            at = np.array([j for _, j in pairs], dtype=np.int64)
            expected = row_checksums(file.ids[at], [file.sha[j] for j in at], file.emb[at])  # type: ignore[index]
            finite = np.isfinite(file.emb[at]).all(axis=1)  # type: ignore[index]
            for (r, j), checksum, is_finite in zip(pairs, expected, finite.tolist(), strict=True):
                if checksum != file.sums[j]:
                    self._row_fault(file, "failed their checksum (changed on disk)")
                elif not is_finite:
                    self._row_fault(file, "held non-finite values")
                elif file.sha[j] == digests[r]:
                    hits[r] = True
                    found[r] = file.emb[j]  # type: ignore[index]
                    sums[r] = checksum
        file.drop_through(last)

    # -- writing -------------------------------------------------------------------------------
    def add(self, user_ids: np.ndarray, digests: list[bytes], embeddings: np.ndarray) -> None:
        """Append a batch's users to their buckets' new files (up to ``max_rows`` each); rows with non-finite values are left out."""
        n = len(user_ids)
        if not self._writing or n == 0:
            return
        if self._memo is not None and self._memo[0] is user_ids:
            _, buckets, sums = self._memo
        else:
            buckets, sums = shard_bucket(user_ids), [None] * n
        self._memo = None
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        keep = np.isfinite(embeddings).all(axis=1)
        todo = [i for i in np.flatnonzero(keep).tolist() if sums[i] is None]
        if todo:
            computed = row_checksums([user_ids[i] for i in todo], [digests[i] for i in todo], embeddings[todo])
            for i, checksum in zip(todo, computed, strict=True):
                sums[i] = checksum
        try:
            for bucket in np.unique(buckets).tolist():
                file = self._files.get(int(bucket))
                if file is None:
                    continue
                rows = np.flatnonzero((buckets == bucket) & keep)[: max(self.max_rows - file.written, 0)]
                if len(rows):
                    self._write(file, [user_ids[i] for i in rows], [digests[i] for i in rows],
                                embeddings[rows], [sums[i] for i in rows])  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs time
            self._write_failed(exc)

    def _write(self, file: _BucketFile, user_ids: list[str], digests: list[bytes], embeddings: np.ndarray,
               sums: list[bytes | None]) -> None:  # fmt: skip
        import pyarrow as pa

        if file.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            file.tmp = file.path.with_name(f".{file.path.name}.{uuid.uuid4().hex[:12]}.tmp")
            file.writer = _new_writer(file.tmp, _schema(self.hidden, self.key, file.bucket))
        values = pa.array(embeddings.reshape(-1), pa.float32())
        table = pa.table(
            {
                "user_id": pa.array(user_ids, pa.string()),
                "text_sha256": pa.array(digests, pa.binary(32)),
                "embedding": pa.FixedSizeListArray.from_arrays(values, self.hidden),
                "checksum": pa.array(sums, pa.binary(CHECKSUM_BYTES)),
            },
            schema=_schema(self.hidden, self.key, file.bucket),
        )
        file.writer.write_table(table)
        file.written += len(user_ids)

    def _write_failed(self, exc: BaseException) -> None:
        """Stop writing: drop every replacement; the old files stay (those found damaged are removed)."""
        self._writing = False
        self._write_error = _describe(exc)
        for file in self._files.values():
            file.close_writer()
        code = getattr(exc, "errno", None)
        if code == errno.ENOSPC or code == errno.EDQUOT:
            fix = f"free space on the disk holding {self.folder.parent} (or lower SPENDPRED_EMBEDDING_CACHE_MAX_MB)"
        elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = f"make {self.folder.parent} writable for the scoring worker"
        else:
            fix = f"make {self.folder.parent} a writable folder"
        self._note(f"it could not be written ({self._write_error})", fix)

    def commit(self) -> None:
        """Replace this shard's files with the new ones (each an atomic rename) and log the one warning, if any.

        A bucket without any of tonight's users loses its old file. A failure is noted, never raised.
        """
        committed = 0
        if self._writing:
            for file in self._files.values():
                try:
                    if file.writer is not None:
                        file.writer.close()
                        file.writer = None
                        assert file.tmp is not None
                        os.replace(file.tmp, file.path)
                        file.tmp = None
                        committed += file.written
                    elif os.path.lexists(file.path):
                        file.path.unlink()
                except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs time
                    self._write_failed(exc)
                    break
        if self._write_error:
            for file in self._files.values():
                if file.damaged:
                    try:
                        file.path.unlink(missing_ok=True)
                    except OSError:
                        pass
        self.written = committed
        if self._write_error:
            self.state = "unwritable"
        elif self._problems or self._bad_files or self._row_faults:
            self.state = "repaired"
        self.discard()

    def discard(self) -> None:
        """Drop the new files (the old ones stay) and log the one warning, if anything was wrong."""
        for file in self._files.values():
            file.close_writer()
        self._report()


def _schema(hidden: int, key: str = "", bucket: int = -1) -> Any:
    import pyarrow as pa

    meta = json.dumps({"format": FORMAT, "key": key, "hidden": hidden, "bucket": bucket, "buckets": SHARD_BUCKETS})
    return pa.schema(
        [("user_id", pa.string()), ("text_sha256", pa.binary(32)),
         ("embedding", pa.list_(pa.float32(), hidden)), ("checksum", pa.binary(CHECKSUM_BYTES))],  # fmt: skip
        metadata={_META_KEY: meta.encode("utf-8")},
    )


def _new_writer(path: Path, schema: Any) -> Any:
    """Open a cache file for writing: uncompressed, no dictionaries or statistics (embeddings do not compress)."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema, compression="none", use_dictionary=False, write_statistics=False)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def describe_cost(cost: dict[str, Any] | None) -> str | None:
    """One line on what scoring the run cost: users encoded, embedding-cache hits, encoder seconds."""
    if not cost:
        return None
    rate = cost.get("hit_rate")
    share = "" if rate is None else f" ({100 * float(rate):.1f}% hit rate)"
    return (
        f"encoder: {int(cost.get('misses') or 0):,} of {int(cost.get('users') or 0):,} users encoded in "
        f"{float(cost.get('encode_seconds') or 0):.1f}s; embedding cache {cost.get('cache')}: "
        f"{int(cost.get('hits') or 0):,} hits{share}"
    )


def cache_root(staging: Path) -> Path:
    """The cache folder under a local staging root (``spendpred.snapshot.embedding_cache_dir``)."""
    return embedding_cache_dir(staging)


def bucket_name(bucket: int) -> str:
    """The file name of one bucket's cache file."""
    return f"bucket-{int(bucket):02d}-of-{SHARD_BUCKETS}.parquet"


def shard_files(staging: Path, key: str, shard: int, shards: int) -> list[Path]:
    """Return the cache files shard ``shard`` of ``shards`` reads and replaces (one per bucket it holds).

    What a copy to or from other storage moves around one shard; no other shard touches them.
    """
    return [cache_root(staging) / key / bucket_name(b) for b in shard_buckets(shard, shards)]


def shard_cache(staging: Path, key: str, shard: int, shards: int, hidden: int, max_mb: float) -> ShardCache:
    """Return shard ``shard`` of ``shards``' part of the cache for ``key``, each bucket's file bounded to ``max_mb`` / 64 MB.

    Opening it checks the folders and the shard's files; problems are noted, never raised.
    """
    row_bytes = hidden * 4 + _ROW_OVERHEAD
    max_rows = int(max_mb * 1_000_000 / SHARD_BUCKETS // row_bytes)
    return ShardCache(folder=cache_root(staging) / key, key=key, hidden=hidden, shard=shard, shards=shards, max_rows=max_rows)


def prune(staging: Path, keep_key: str, shards: int | None = None) -> list[Path]:
    """Remove every cache but ``keep_key``'s, and anything in it that is not a bucket file; return what was removed.

    Called once all of a run's shards have scored (the other keys belong to earlier champions,
    settings or formats). Temporary files younger than a few hours are kept (a shard of another
    run may be writing them). ``shards`` is accepted for older callers and ignored: the layout
    does not depend on it. Errors are logged, never raised: a leftover cache only costs disk.
    """
    removed: list[Path] = []
    root = cache_root(staging)
    if not root.is_dir():
        return removed
    names = {bucket_name(b) for b in range(SHARD_BUCKETS)}
    now = time.time()
    for entry in sorted(root.iterdir()):
        try:
            if entry.name != keep_key or not entry.is_dir():
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                removed.append(entry)
                continue
            for file in sorted(entry.iterdir()):
                if file.name in names:
                    continue
                if file.name.endswith(".tmp") and now - file.lstat().st_mtime < _TEMP_GRACE_SECONDS:
                    continue
                shutil.rmtree(file) if file.is_dir() and not file.is_symlink() else file.unlink()
                removed.append(file)
        except OSError as exc:
            logger.warning("could not prune the embedding cache %s (%s): remove it by hand to free the disk", entry, exc)
    if removed:
        logger.info("embedding cache: removed %d stale entries under %s", len(removed), root)
    return removed
