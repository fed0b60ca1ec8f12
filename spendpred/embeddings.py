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

    <staging>/embedding-cache/<key>/shard-<i>-of-<n>.parquet
        user_id (string), text_sha256 (binary 32), embedding (fixed_size_list<float32>[hidden])

``<key>`` names the model (registered version and a digest of its bundle's file checksums)
and everything else the embedding depends on (precision, batch size, device type), so a new
champion, or a setting that changes the encoder output, starts a fresh cache;
:func:`prune` removes the other keys once a run has finished with one. One file per shard
(the nightly's shard count): a shard reads only its own file, in step with the snapshot, which
is sorted by ``user_id`` (byte order), so memory stays flat whatever the number of users. A
file is replaced atomically (written under a temporary name, then renamed) after its shard
has scored. Its size is bounded by ``SPENDPRED_EMBEDDING_CACHE_MAX_MB`` (shared evenly
among shards; users past the bound are simply not cached).

A missing, unreadable, corrupt or foreign cache file only costs time: it is logged and every
user of the shard is encoded. int8 scoring is never cached (its quantisation depends on the
batch, so a cached row would not equal a fresh one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spendpred.files import open_parquet, temporary_sibling

logger = logging.getLogger(__name__)

CACHE_DIRNAME = "embedding-cache"
FORMAT = "spendpred-embedding-cache/1"
_META_KEY = b"spendpred"
_READ_BATCH = 50_000


def text_digests(texts: Sequence[str]) -> list[bytes]:
    """Return the sha256 digest (32 bytes) of each text's UTF-8 bytes."""
    sha = hashlib.sha256
    return [sha(text.encode("utf-8")).digest() for text in texts]


def cache_key(model_version: str, model_meta: dict[str, Any], precision: str, batch_size: int | None, device: str) -> str:
    """Return the cache folder name for a model version and the settings its embeddings depend on."""
    files = model_meta.get("files") or {}
    digest = hashlib.sha256(
        json.dumps(
            {"files": files, "max_length": model_meta.get("max_length"), "precision": precision,
             "batch_size": batch_size, "device": device},
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
class ShardCache:
    """One shard's cache file: read in step with the snapshot, and its replacement being written.

    ``path`` is the shard's file, ``hidden`` the embedding width, ``max_rows`` the most rows
    the new file may hold. Use :meth:`lookup` for each snapshot batch in order, :meth:`add`
    for the batch's embeddings, then :meth:`commit` (or :meth:`discard`).
    """

    path: Path
    hidden: int
    max_rows: int
    key: str
    state: str = "cold"
    _reader: Iterator[Any] | None = field(default=None, repr=False)
    _buffer_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object), repr=False)
    _buffer_sha: list[bytes] = field(default_factory=list, repr=False)
    _buffer_emb: np.ndarray | None = field(default=None, repr=False)
    _last_id: str | None = field(default=None, repr=False)
    _writer: Any = field(default=None, repr=False)
    _tmp: Path | None = field(default=None, repr=False)
    written: int = 0

    def __post_init__(self) -> None:
        self._buffer_emb = np.zeros((0, self.hidden), dtype=np.float32)
        if self.path.is_file():
            self._reader = self._open()

    # -- reading -----------------------------------------------------------------------------
    def _open(self) -> Iterator[Any] | None:
        import pyarrow as pa

        try:
            parquet = open_parquet(self.path)
            meta = json.loads((parquet.schema_arrow.metadata or {}).get(_META_KEY, b"{}"))
            emb_type = parquet.schema_arrow.field("embedding").type
            if (
                meta.get("format") != FORMAT
                or meta.get("key") != self.key
                or not pa.types.is_fixed_size_list(emb_type)
                or emb_type.list_size != self.hidden
                or emb_type.value_type != pa.float32()
            ):
                self._unusable(f"it was written for another model or format ({meta.get('key')!r})")
                return None
        except Exception as exc:  # noqa: BLE001 - any unreadable file only costs time
            self._unusable(f"it cannot be read ({type(exc).__name__}: {exc})")
            return None
        self.state = "warm"
        return parquet.iter_batches(batch_size=_READ_BATCH, columns=["user_id", "text_sha256", "embedding"])

    def _unusable(self, why: str) -> None:
        logger.warning("embedding cache %s is not used: %s; every user of the shard is encoded (it is rewritten)", self.path, why)
        self.state = "unusable"
        self._reader = None

    def _pull(self) -> bool:
        """Append the next cache batch to the buffer; False when the file is exhausted or broken."""
        if self._reader is None:
            return False
        try:
            batch = next(self._reader)
        except StopIteration:
            self._reader = None
            return False
        except Exception as exc:  # noqa: BLE001 - a corrupt page: drop the rest of the cache
            self._unusable(f"it is corrupt ({type(exc).__name__}: {exc})")
            return False
        ids = batch.column(0).to_numpy(zero_copy_only=False).astype(object)
        sha = batch.column(1).to_pylist()
        emb_col = batch.column(2)
        emb = emb_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        if emb.size != len(ids) * self.hidden or emb_col.null_count:
            self._unusable("a row has a malformed embedding")
            return False
        self._buffer_ids = np.concatenate([self._buffer_ids, ids])
        self._buffer_sha = self._buffer_sha + sha
        self._buffer_emb = np.concatenate([self._buffer_emb, emb.reshape(len(ids), self.hidden)])
        return True

    def lookup(self, user_ids: np.ndarray, digests: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(hit_mask, embeddings of the hits)`` for a batch of users in ascending ``user_id`` order.

        A batch out of order (the snapshot is sorted, so this means something changed) turns
        the cache off for the rest of the shard: everyone after it is encoded.
        """
        n = len(user_ids)
        hits = np.zeros(n, dtype=bool)
        if n == 0 or (self._reader is None and len(self._buffer_ids) == 0):
            return hits, np.zeros((0, self.hidden), dtype=np.float32)
        first, last = str(user_ids[0]), str(user_ids[-1])
        ordered = n < 2 or bool(np.all(user_ids[:-1] <= user_ids[1:]))
        if not ordered or (self._last_id is not None and first <= self._last_id):
            self._unusable("the snapshot's users are not in ascending user_id order")
            self._buffer_ids = np.array([], dtype=object)
            return hits, np.zeros((0, self.hidden), dtype=np.float32)
        self._last_id = last
        while (len(self._buffer_ids) == 0 or self._buffer_ids[-1] <= last) and self._pull():
            pass
        upto = int(np.searchsorted(self._buffer_ids, last, side="right")) if len(self._buffer_ids) else 0
        cached_ids = self._buffer_ids[:upto]
        position = {uid: i for i, uid in enumerate(cached_ids)}
        take = np.full(n, -1, dtype=np.int64)
        for i, (uid, digest) in enumerate(zip(user_ids, digests, strict=True)):
            j = position.get(uid)
            if j is not None and self._buffer_sha[j] == digest:
                take[i] = j
        hits = take >= 0
        embeddings = self._buffer_emb[take[hits]]
        self._buffer_ids = self._buffer_ids[upto:]
        self._buffer_sha = self._buffer_sha[upto:]
        self._buffer_emb = self._buffer_emb[upto:]
        return hits, embeddings

    # -- writing -----------------------------------------------------------------------------
    def add(self, user_ids: np.ndarray, digests: list[bytes], embeddings: np.ndarray) -> None:
        """Append a batch's users to the new cache file (up to ``max_rows`` in all)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        room = self.max_rows - self.written
        if room <= 0 or len(user_ids) == 0:
            return
        user_ids, digests, embeddings = user_ids[:room], digests[:room], embeddings[:room]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = temporary_sibling(self.path)
            self._writer = pq.ParquetWriter(self._tmp, self._schema(), compression="none")
        values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1), pa.float32())
        table = pa.table(
            {
                "user_id": pa.array(list(user_ids), pa.string()),
                "text_sha256": pa.array(digests, pa.binary(32)),
                "embedding": pa.FixedSizeListArray.from_arrays(values, self.hidden),
            },
            schema=self._schema(),
        )
        self._writer.write_table(table)
        self.written += len(user_ids)

    def _schema(self) -> Any:
        import pyarrow as pa

        meta = json.dumps({"format": FORMAT, "key": self.key, "hidden": self.hidden})
        return pa.schema(
            [("user_id", pa.string()), ("text_sha256", pa.binary(32)),
             ("embedding", pa.list_(pa.float32(), self.hidden))],  # fmt: skip
            metadata={_META_KEY: meta.encode("utf-8")},
        )

    def commit(self) -> None:
        """Replace the shard's cache file with the new one (atomic rename); a failure is logged, never raised."""
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                assert self._tmp is not None
                self._tmp.replace(self.path)
                self._tmp = None
        except OSError as exc:
            logger.warning("could not write the embedding cache %s (%s): the next night encodes these users again", self.path, exc)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the new file (the old one, if any, stays)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing; the temporary file goes anyway
                pass
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


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
    """The cache folder under a staging root."""
    return Path(staging) / CACHE_DIRNAME


def shard_cache(staging: Path, key: str, shard: int, shards: int, hidden: int, max_mb: float) -> ShardCache:
    """Return the cache of one shard for ``key``, bounded to its share of ``max_mb`` megabytes."""
    row_bytes = hidden * 4 + 32 + 24
    max_rows = int(max_mb * 1_000_000 / max(int(shards), 1) // row_bytes)
    path = cache_root(staging) / key / f"shard-{int(shard)}-of-{int(shards)}.parquet"
    return ShardCache(path=path, hidden=hidden, max_rows=max_rows, key=key)


def prune(staging: Path, keep_key: str, shards: int) -> list[Path]:
    """Remove every cache but ``keep_key``'s, and its files for another shard count; return what was removed.

    Called once all of a run's shards have scored (the other keys belong to earlier champions
    or settings). Errors are logged, never raised: a leftover cache only costs disk.
    """
    removed: list[Path] = []
    root = cache_root(staging)
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        try:
            if entry.name != keep_key:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                removed.append(entry)
                continue
            for file in sorted(entry.iterdir()):
                if not file.name.endswith(f"-of-{int(shards)}.parquet"):
                    file.unlink()
                    removed.append(file)
        except OSError as exc:
            logger.warning("could not prune the embedding cache %s (%s)", entry, exc)
    if removed:
        logger.info("embedding cache: removed %d stale entries under %s", len(removed), root)
    return removed
