"""Registrations of many documents in one transaction, a mixin of SqlCatalog: an
import's batch (`register_many`) and a mount's round of closes (`write_at_paths`).

Each costs a few statements whatever its size, because nearly everything a pipeline
registers is the plain case: a new key, or a new file, at a free path. Those go in
with one insert that skips any row whose place turns out taken (a partial unique
index). The rest (a key or an inode that is live, a key, inode or path met twice,
a taken path) are then made one by one, in order, by the same rules as a single
registration; they commute with the inserted ones, which share no key, inode or
path with them. The contract tests check that a batch ends as the same calls made
one at a time (`tests/test_catalog_contract.py`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, TypeVar

from casfs.catalog import BlobCheck, RegisterOutcome
from casfs.catalog.database import Database, Row
from casfs.catalog.sql_queries import DOC_COLUMNS, document_of, value_rows
from casfs.records import Directory, Document, NewDocument, PathWrite

_LIVE = "valid_to IS NULL"
T = TypeVar("T")


def key_of(new: NewDocument) -> tuple[str, str, str]:
    """The seeds' key of a document that has a source URL (law 4)."""
    assert new.source_url is not None
    return (new.artifact_id, new.source_url, new.resolver)


def content_of(new: NewDocument) -> dict[str, Any]:
    """The fields a new version takes from freshly written bytes."""
    content: dict[str, Any] = {"sha256": new.sha256, "bytes": new.bytes,
                               "storage_uri": new.storage_uri}
    if new.mtime_ns is not None:
        content["mtime_ns"] = new.mtime_ns
    for name in ("content_type", "run_id", "source_url"):
        if getattr(new, name) is not None:
            content[name] = getattr(new, name)
    return content


def _at_place(write: PathWrite) -> NewDocument:
    """The write's document, in the write's directory (an artifact directory)."""
    assert write.directory.artifact_id is not None
    return replace(write.new, resolver=write.directory.resolver,
                   artifact_id=write.directory.artifact_id)


class SqlBatches:
    db: Database

    # provided by SqlCatalog and its other mixins
    def _write(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _retrying(self, change: Callable[[], T]) -> T:
        raise NotImplementedError

    def _claim_blobs(self, sizes: dict[str, int], present: BlobCheck | None) -> None:
        raise NotImplementedError

    def _bump_arrivals(self, news: list[NewDocument]) -> None:
        raise NotImplementedError

    def _register_counted(self, new: NewDocument) -> tuple[Document, RegisterOutcome]:
        raise NotImplementedError

    def live_hashes_by_key(self, keys: list[tuple[str, str, str]]
                           ) -> dict[tuple[str, str, str], str]:
        raise NotImplementedError

    def _ensure_artifact_directories(self, keys: set[tuple[str, str]]) -> None:
        raise NotImplementedError

    def take_ino(self) -> int:
        raise NotImplementedError

    @staticmethod
    def _new_row(ino: int, new: NewDocument, basename: str, now: float) -> dict[str, Any]:
        raise NotImplementedError

    def _changed(self, doc: Document) -> Document:
        raise NotImplementedError

    def _close(self, ino: int, change: str) -> None:
        raise NotImplementedError

    def _update_content(self, doc: Document, content: dict[str, Any]) -> Document:
        raise NotImplementedError

    def _insert_version(self, previous: Document, **changes: Any) -> Document:
        raise NotImplementedError

    def _insert_new(self, ino: int, new: NewDocument, basename: str,
                    directory: Directory | None = None) -> Document:
        raise NotImplementedError

    def register_many(self, batch: list[NewDocument], present: BlobCheck | None = None
                      ) -> list[tuple[Document, RegisterOutcome]]:
        """`register` for a batch, in one transaction (what an import does).

        A batch costs a few statements whatever its size: the blobs are claimed, the
        live documents of its keys found, the missing directories made, and every
        document whose key is new and whose path is free (an import of new downloads)
        inserted at once. The others (a key that is live, or twice in the batch, a
        path twice in the batch or taken) are then registered one by one, in order:
        they have no key or path in common with the inserted ones.
        """
        if not batch:
            return []

        def change() -> list[tuple[Document, RegisterOutcome]]:
            with self._write():
                self._claim_blobs({new.sha256: new.bytes for new in batch}, present)
                self._bump_arrivals(batch)
                inserted = self._insert_if_new(batch)
                return [(inserted[i], "added") if i in inserted else self._register_counted(new)
                        for i, new in enumerate(batch)]
        return self._retrying(change)

    def _insert_if_new(self, batch: list[NewDocument]) -> dict[int, Document]:
        """Insert the documents of `batch` whose key is not live and not elsewhere in
        the batch, and whose path is free: {index in batch: its first version}."""
        keyed = [key_of(new) for new in batch if new.source_url is not None]
        live = self.live_hashes_by_key(list(set(keyed)))
        keys = Counter(keyed)
        places = Counter((new.resolver, new.artifact_id, new.basename) for new in batch)
        alone = {i: new for i, new in enumerate(batch)
                 if places[(new.resolver, new.artifact_id, new.basename)] == 1
                 and (new.source_url is None
                      or (keys[key_of(new)] == 1 and key_of(new) not in live))}
        if not alone:
            return {}
        self._ensure_artifact_directories({(new.resolver, new.artifact_id)
                                           for new in alone.values()})
        now = time.time()
        index_of = {}
        rows = []
        for i, new in alone.items():
            ino = self.take_ino()
            index_of[ino] = i
            rows.append(self._new_row(ino, new, new.basename, now))
        sql, args = self._insert_where_free(rows)
        return {index_of[ino]: doc for ino, doc in self._inserted(self.db.rows(sql, args)).items()}

    def write_at_paths(self, writes: list[PathWrite], present: BlobCheck | None = None
                       ) -> list[Document]:
        """The mount's writes of closed files, in one transaction: see Catalog.

        A round of closes costs a few statements whatever its size (one on
        PostgreSQL, see `_claim_and_insert`): the blobs are locked and recorded, and
        every file whose inode and path are free (the usual case: a pipeline writing
        new documents) is inserted at once, the others skipped. A write that meets a
        live document, or shares its inode or path with another of the round, is then
        made on its own, in order: the free ones commute with it (no inode or path in
        common).
        """
        if not writes:
            return []

        def change() -> list[Document]:
            with self._write():
                self._bump_arrivals([w.new for w in writes])
                inos = Counter(w.ino for w in writes)
                places = Counter(w.place for w in writes)
                alone = [w for w in writes if inos[w.ino] == 1 and places[w.place] == 1]
                inserted = self._claim_and_insert(
                    {w.new.sha256: w.new.bytes for w in writes}, present, alone)
                return [inserted[w.ino] if w.ino in inserted else self._write_at_path(w)
                        for w in writes]
        return self._retrying(change)

    def _write_at_path(self, write: PathWrite) -> Document:
        """One write of `write_at_paths`, asking the catalog for what it meets."""
        ino, directory, basename, new = write.ino, write.directory, write.basename, write.new
        assert directory.artifact_id is not None
        previous, occupant = self._inode_and_occupant(ino, directory, basename)
        if occupant is not None and occupant.ino != ino:
            self._close(occupant.ino, "replaced")
        if previous is not None and previous.id == write.supersede and \
                (previous.resolver, previous.artifact_id, previous.basename) == write.place:
            return self._update_content(previous, content_of(new))
        if previous is not None:
            self._close(ino, "overwrite")
            return self._insert_version(
                previous, resolver=directory.resolver, artifact_id=directory.artifact_id,
                basename=basename, **content_of(new))
        return self._insert_new(ino, new, basename, directory)

    def _claim_and_insert(self, sizes: dict[str, int], present: BlobCheck | None,
                          writes: list[PathWrite]) -> dict[int, Document]:
        """`_claim_blobs(sizes, present)`, then insert new documents for the writes
        whose inode and path hold no live document: {ino: its first version}. The
        skipped writes are the caller's. A backend may send it all (and the counters
        so far) as one statement, as long as `present` is checked after the locks."""
        self._claim_blobs(sizes, present)
        if not writes:
            return {}
        sql, args = self._insert_where_free(self._new_rows(writes))
        return self._inserted(self.db.rows(sql, args))

    def _insert_where_free(self, rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
        """The statement that inserts new documents (`_new_row`s), each only where its
        inode, path and key are free (a live one trips a partial unique index, and the
        row is skipped), returning the inserted rows."""
        names = ", ".join(rows[0])
        return (f"INSERT INTO documents ({names}) VALUES {value_rows(len(rows[0]), len(rows))} "
                f"ON CONFLICT DO NOTHING RETURNING {DOC_COLUMNS}",
                [v for row in rows for v in row.values()])

    def _new_rows(self, writes: list[PathWrite]) -> list[dict[str, Any]]:
        """The columns of the writes' new documents, each in its write's directory."""
        now = time.time()
        return [self._new_row(w.ino, _at_place(w), w.basename, now) for w in writes]

    def _inserted(self, rows: list[Row]) -> dict[int, Document]:
        return {doc.ino: self._changed(doc) for doc in map(document_of, rows)}

    def _inode_and_occupant(self, ino: int, directory: Directory, basename: str
                            ) -> tuple[Document | None, Document | None]:
        """The live document of `ino` and the live one at the path, in one query
        (two index lookups: an OR of the two would scan the table on SQLite)."""
        rows = self.db.rows(
            f"SELECT {DOC_COLUMNS} FROM documents WHERE {_LIVE} AND ino = ? UNION ALL "
            f"SELECT {DOC_COLUMNS} FROM documents WHERE {_LIVE} AND resolver = ? "
            "AND artifact_id = ? AND basename = ?",
            (ino, directory.resolver, directory.artifact_id, basename))
        found = [document_of(r) for r in rows]
        previous = next((d for d in found if d.ino == ino), None)
        occupant = next((d for d in found if (d.resolver, d.artifact_id, d.basename) == (
            directory.resolver, directory.artifact_id, basename)), None)
        return previous, occupant
