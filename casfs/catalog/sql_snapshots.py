"""Snapshots: named moments whose blobs gc keeps. A mixin of SqlCatalog.

A snapshot is only a name and a moment: the catalog already holds every version,
so the tree of that moment is the time-travel view of it. What a snapshot adds is a
promise: gc keeps every blob that a document live at its moment uses, whatever the
retention window says (the garbage query asks `sql_queries.PINNED_BY_SNAPSHOTS`),
until the snapshot is deleted.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from casfs.catalog.database import Database
from casfs.catalog.sql_queries import live_at
from casfs.errors import Conflict
from casfs.records import Snapshot


class SqlSnapshots:
    db: Database

    def _write(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # provided by SqlCatalog

    def create_snapshot(self, name: str, at: float, note: str | None = None) -> Snapshot:
        snapshot = Snapshot(name, at, note, time.time())
        with self._write():
            if self.snapshot(name) is not None:
                raise Conflict(f"a snapshot named {name!r} exists")
            self.db.execute("INSERT INTO snapshots (name, at, note, created_at) "
                            "VALUES (?, ?, ?, ?)", (name, at, note, snapshot.created_at))
        return snapshot

    def snapshot(self, name: str) -> Snapshot | None:
        row = self.db.one("SELECT name, at, note, created_at FROM snapshots WHERE name = ?",
                          (name,))
        return Snapshot(*row) if row else None

    def snapshots(self) -> list[Snapshot]:
        return [Snapshot(*row) for row in self.db.rows(
            "SELECT name, at, note, created_at FROM snapshots ORDER BY at, name")]

    def delete_snapshot(self, name: str) -> bool:
        with self._write():
            found = self.snapshot(name) is not None
            self.db.execute("DELETE FROM snapshots WHERE name = ?", (name,))
        return found

    def snapshot_usage(self, name: str) -> tuple[int, int]:
        """(blobs, bytes) the documents live at the snapshot's moment use."""
        row = self.db.one(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM blobs WHERE sha256 IN ("
            f"SELECT d.sha256 FROM documents d JOIN snapshots s ON {live_at('s.at')} "
            "WHERE s.name = ?)", (name,))
        assert row is not None
        return int(row[0]), int(row[1])

    def lost_at(self, moment: float) -> tuple[int, float | None]:
        """(documents live at `moment` whose blob is no longer stored, the moment
        after which no live document lost its blob): a view of `moment` is whole
        when the first is 0."""
        lost = self.db.one(
            "SELECT count(*) FROM documents d JOIN blobs b ON b.sha256 = d.sha256 "
            f"WHERE b.state != 'present' AND {live_at('?')}", (moment, moment))
        since = self.db.one(
            "SELECT max(d.valid_to) FROM documents d JOIN blobs b ON b.sha256 = d.sha256 "
            "WHERE b.state != 'present'")
        assert lost is not None and since is not None
        return int(lost[0]), None if since[0] is None else float(since[0])
