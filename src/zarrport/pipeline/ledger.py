"""The status ledger: one SQLite row per source URL.

It records what a batch knows about each source -- its size, modification time / ETag when it
was listed, status, attempts, last error, where its references went and which collection
commit includes it -- plus the source's parsed model (pickled, compressed), so that a re-run
combines a collection from the ledger without parsing unchanged files again. Only the
process that drives a batch writes it (workers return results to it), in WAL mode, one
transaction per source: a ``kill -9`` loses at most the source in flight.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zarrport.errors import InvalidArgumentError, OutputNotWritableError

#: statuses of a source row
OK, FAILED, SKIPPED, MISSING = "ok", "failed", "skipped", "missing"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    url TEXT PRIMARY KEY,
    collection TEXT,
    size INTEGER,
    mtime REAL,
    etag TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    last_error TEXT,
    refs TEXT,
    snapshot TEXT,
    first_seen REAL,
    updated REAL,
    model BLOB
);
CREATE INDEX IF NOT EXISTS sources_collection ON sources (collection, status);
"""

COLUMNS = ("url", "collection", "size", "mtime", "etag", "status", "attempts", "error_code",
           "last_error", "refs", "snapshot", "first_seen", "updated")


class Ledger:
    """``Ledger(path)`` opens (creating if needed) the ledger at a local path."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise OutputNotWritableError(
                f"cannot keep the ledger at {self.path}: {self.path.parent} is not a directory"
            )
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise InvalidArgumentError(f"{self.path} is not a zarrport ledger ({err})") from err
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def rows(self, *, collection: str | None = None, status: str | None = None) -> list[dict]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM sources"
        where, args = [], []
        if collection is not None:
            where.append("collection = ?")
            args.append(collection)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [dict(r) for r in self.db.execute(sql + " ORDER BY url", args)]

    def get(self, url: str) -> dict | None:
        r = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM sources WHERE url = ?",
                            (url,)).fetchone()
        return dict(r) if r else None

    def models(self, collection: str) -> Iterator[tuple[dict, Any]]:
        """(row, VirtualDataset) of every referenced source of a collection."""
        cur = self.db.execute(
            f"SELECT {', '.join(COLUMNS)}, model FROM sources WHERE collection = ? AND "
            "status = ? ORDER BY url", (collection, OK))
        for r in cur:
            row = dict(r)
            blob = row.pop("model")
            yield row, pickle.loads(zlib.decompress(blob)) if blob else None

    # ------------------------------------------------------------------ writes

    def record_ok(self, url: str, collection: str, stat: dict, attempts: int, refs: str | None,
                  model: Any) -> None:
        """``model``: the VirtualDataset, or its zlib-compressed pickle as workers send it."""
        blob = model if isinstance(model, bytes) else zlib.compress(
            pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL), 1)
        self._upsert(url, collection=collection, size=stat.get("size"), mtime=stat.get("mtime"),
                     etag=stat.get("etag"), status=OK, attempts=attempts, error_code=None,
                     last_error=None, refs=refs, snapshot=None, model=blob)

    def record_failure(self, url: str, collection: str | None, stat: dict | None, attempts: int,
                       code: str, reason: str, status: str = FAILED) -> None:
        stat = stat or {}
        self._upsert(url, collection=collection, size=stat.get("size"), mtime=stat.get("mtime"),
                     etag=stat.get("etag"), status=status, attempts=attempts, error_code=code,
                     last_error=reason, refs=None, snapshot=None, model=None)

    def mark_missing(self, urls: Iterable[str]) -> None:
        now = time.time()
        self.db.executemany(
            "UPDATE sources SET status = ?, snapshot = NULL, model = NULL, updated = ? "
            "WHERE url = ?", [(MISSING, now, u) for u in urls])

    def mark_committed(self, urls: Iterable[str], snapshot: str) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("UPDATE sources SET snapshot = ? WHERE url = ?",
                            [(snapshot, u) for u in urls])
        self.db.execute("COMMIT")

    def _upsert(self, url: str, **values: Any) -> None:
        now = time.time()
        values["updated"] = now
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in values)
        self.db.execute(
            f"INSERT INTO sources (url, first_seen, {cols}) VALUES (?, ?, {marks}) "
            f"ON CONFLICT(url) DO UPDATE SET {updates}",
            (url, now, *values.values()),
        )
