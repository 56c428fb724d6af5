"""The catalog's rules, written once for every SQL backend.

`SqlCatalog` implements the `Catalog` protocol on a `Database` (see database.py):
versioned documents (a change closes the live row and inserts the next version
with the same inode), collision names, the directory rules, key idempotence,
registration under the blob-presence check, and (in its mixins) the directory
tree, the blob ledger, the counters, the reports, and registrations in batches
(sql_batches.py: an import's, a mount's round of closes). A backend subclass opens its
`Database` and adds only what its engine does differently: how inode numbers are
reserved, how counters are written, how a blob is locked against gc, and its own
checks.

The schema each backend creates is described, column by column, in
`casfs.catalog.sqlite.schema` (the canonical reference; PostgreSQL's has the same
tables, columns and meaning).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any, TypeVar

from casfs import naming
from casfs.catalog import ROOT_INO, BlobCheck, Catalog, RegisterOutcome
from casfs.catalog.changes import Change, DirectoryChange, DocumentChange
from casfs.catalog.database import Database
from casfs.catalog.past import PastQueries
from casfs.catalog.sql_batches import SqlBatches, content_of
from casfs.catalog.sql_directories import SqlDirectories
from casfs.catalog.sql_ledger import SqlBlobLedger
from casfs.catalog.sql_queries import DOC_COLUMNS, SqlQueries, document_of
from casfs.catalog.sql_snapshots import SqlSnapshots
from casfs.errors import (
    BlobsMissing,
    CatalogRace,
    CatalogReadOnly,
    Conflict,
    NotFound,
    UniqueViolation,
)
from casfs.records import Directory, Document, NewDocument, Variant

INO_BLOCK = 256
MAX_KEPT_CHANGES = 1000  # see drain_changes
RETRIES = 5  # a write transaction that lost a race with another writer runs again
_DOC_COLUMNS = DOC_COLUMNS
_LIVE = "valid_to IS NULL"
T = TypeVar("T")


def _label(value: str) -> str:
    """A Prometheus label value: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class SqlCatalog(SqlQueries, SqlBlobLedger, SqlSnapshots, SqlDirectories, SqlBatches):
    local = False

    def __init__(self, db: Database) -> None:
        self.db = db
        self._reserved_inos = range(0)
        self._directories_seen: dict[tuple[str, str | None], Directory] = {}
        self._counter_deltas: dict[tuple[str, str], int] = {}
        self._changes: list[Change] = []
        self._committed: list[Change] | None = []
        self._past: PastQueries | None = None  # set by show_at: a read-only view
        self.sender = secrets.token_hex(8)  # who this connection is, in announcements
        self._relaxed = False  # relax_commits was called

    def close(self) -> None:
        self.db.close()

    def relax_commits(self) -> None:
        self._sync_commits(False)
        self._relaxed = True

    def make_commits_durable(self) -> None:
        self._sync_commits(True)
        try:
            self.add_to_counters({"casfs_durability_rounds_total": 1})  # a commit
        finally:
            if self._relaxed:
                self._sync_commits(False)

    def _sync_commits(self, durable: bool) -> None:
        """Whether this connection's commits wait for the disk (the backend says how)."""
        raise NotImplementedError

    def write_transaction(self) -> AbstractContextManager[None]:
        """A write transaction for a caller that must act on blob files while no
        registration can commit (quarantine, gc): see `_require_present`."""
        return self._write()

    @property
    def at(self) -> float | None:
        return self._past.at if self._past else None

    def show_at(self, moment: float) -> None:
        """From now on, answer the tree's questions as of `moment`; refuse writes."""
        self._past = PastQueries(self.db, moment)

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction (refused by a view of the past)."""
        if self._past is not None:
            raise CatalogReadOnly("a view of a past moment cannot be changed")
        with self._transaction():
            yield

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # Directories found in this transaction stay valid until it ends; another
        # process may remove one as soon as it commits.
        self._directories_seen = {}
        self._counter_deltas = {}
        self._changes = []
        try:
            with self.db.transaction():
                yield
                self._flush_counters()
        except BaseException:
            self._counter_deltas = {}
            self._changes = []
            # The block of inode numbers may have been reserved by this transaction,
            # and the rollback gives it back: never hand its numbers out (a gap is fine).
            self._reserved_inos = range(0)
            raise
        changes, self._changes = self._changes, []
        if changes:
            self._keep_committed(changes)
            self._announce(changes)

    def _keep_committed(self, changes: list[Change]) -> None:
        if self._committed is None:
            return  # already too many: the next drain says "everything"
        self._committed.extend(changes)
        if len(self._committed) > MAX_KEPT_CHANGES:
            self._committed = None

    def drain_changes(self) -> list[Change] | None:
        """What this connection's transactions committed since the last call; None
        when that was more than MAX_KEPT_CHANGES places (take it as everything)."""
        committed, self._committed = self._committed, []
        return committed

    def _announce(self, changes: list[Change]) -> None:
        """Tell other processes what the transaction that just committed changed
        (backends that can); never needed for correctness, so failures are logged."""

    def _retrying(self, change: Callable[[], T]) -> T:
        """Run `change`, a whole write transaction, again when it lost a race with
        another writer (a key or a directory made meanwhile): the next run sees it."""
        for attempt in itertools.count(1):
            try:
                return change()
            except (UniqueViolation, CatalogRace):
                if attempt >= RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self.db.one(sql, args)

    # -- the tree ---------------------------------------------------------------
    def reserve_inos(self) -> range:
        """A block of INO_BLOCK inode numbers nobody else will use (a mount's new files)."""
        with self._write():
            return self._reserve()

    def _reserve(self) -> range:
        """Take a block of INO_BLOCK inode numbers (inside a write transaction)."""
        raise NotImplementedError

    def take_ino(self) -> int:
        """The next inode number of this connection's block (inside a write transaction)."""
        if not self._reserved_inos:
            self._reserved_inos = self._reserve()
        ino = self._reserved_inos.start
        self._reserved_inos = self._reserved_inos[1:]
        return ino

    # -- documents --------------------------------------------------------------
    def get_document(self, ino: int) -> Document | None:
        if self._past:
            return self._past.get_document(ino)
        row = self._one(f"SELECT {_DOC_COLUMNS} FROM documents WHERE ino = ? AND {_LIVE}",
                        (ino,))
        return document_of(row) if row else None

    def lookup_document(self, directory: Directory, basename: str) -> Document | None:
        if self._past:
            return self._past.lookup_document(directory, basename)
        row = self._one(f"SELECT {_DOC_COLUMNS} FROM documents WHERE resolver = ? "
                        f"AND artifact_id = ? AND basename = ? AND {_LIVE}",
                        (directory.resolver, directory.artifact_id, basename))
        return document_of(row) if row else None

    def list_documents(self, directory: Directory, after_ino: int, limit: int) -> list[Document]:
        if self._past:
            return self._past.list_documents(directory, after_ino, limit)
        rows = self.db.rows(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE resolver = ? AND artifact_id = ? "
            f"AND {_LIVE} AND ino > ? ORDER BY ino LIMIT ?",
            (directory.resolver, directory.artifact_id, after_ino, limit))
        return [document_of(r) for r in rows]

    def history(self, ino: int) -> list[Document]:
        rows = self.db.rows(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE ino = ? ORDER BY valid_from, id",
            (ino,))
        return [document_of(r) for r in rows]

    def _by_key(self, new: NewDocument) -> Document | None:
        if new.source_url is None:
            return None
        return self.find_by_key(new.artifact_id, new.source_url, new.resolver)

    def _path_taken(self, resolver: str, artifact_id: str, basename: str) -> bool:
        return self._one(f"SELECT 1 FROM documents WHERE resolver = ? AND artifact_id = ? "
                         f"AND basename = ? AND {_LIVE}",
                         (resolver, artifact_id, basename)) is not None

    def find_by_key(self, artifact_id: str, source_url: str, resolver: str) -> Document | None:
        row = self._one(f"SELECT {_DOC_COLUMNS} FROM documents WHERE artifact_id = ? "
                        f"AND source_url = ? AND resolver = ? AND {_LIVE}",
                        (artifact_id, source_url, resolver))
        return document_of(row) if row else None

    def register(self, new: NewDocument,
                 present: BlobCheck | None = None) -> tuple[Document, RegisterOutcome]:
        """Register a stored blob as a document; idempotent on the seeds' key.

        The same key with the same bytes changes nothing; with other bytes it makes a
        new version of that document (same path, same inode). A new document whose
        basename is taken gets `naming.collision_name`, derived from the record.
        `present` is checked inside the transaction (see `_require_present`).
        """
        def change() -> tuple[Document, RegisterOutcome]:
            with self._write():
                self._require_present([new.sha256], present)
                return self._register(new)
        return self._retrying(change)

    def _require_present(self, sha256s: list[str], present: BlobCheck | None) -> None:
        """Refuse to register records whose blob is gone.

        Blobs are removed (gc) or quarantined (verify) only inside a write
        transaction; checking here, inside ours, means that either the remover saw
        our records or we see its removal and raise, so that the caller restores the
        blob from its staging file (law 2 under concurrency).
        """
        self._lock_blobs_in_use(sorted(set(sha256s)))
        self._check_present(sha256s, present)

    @staticmethod
    def _check_present(sha256s: list[str], present: BlobCheck | None) -> None:
        """Raise BlobsMissing for the blobs `present` says are gone (under the locks)."""
        if present is not None:
            missing = sorted({sha for sha in sha256s if not present(sha)})
            if missing:
                raise BlobsMissing(missing)

    def _claim_blobs(self, sizes: dict[str, int], present: BlobCheck | None) -> None:
        """`_require_present` for the blobs ({sha256: size}) of new documents, and
        record them in the ledger as present (a backend may do both in one
        statement: the check still comes after the locks)."""
        self._require_present(sorted(sizes), present)
        self._ensure_blobs(sizes)

    def _lock_blobs_in_use(self, sha256s: list[str]) -> None:
        """Keep gc from removing these blobs until this transaction ends (law 3 with
        many writers). SQLite needs nothing: its write transactions are serial."""

    def integrity_problems(self) -> list[str]:
        """What the database's own checks find (fsck); none by default."""
        return []

    def lock_blob_for_removal(self, sha256: str) -> bool:
        """Inside write_transaction, before gc or quarantine removes a blob: False
        when a registration is using it right now (leave it for the next run)."""
        return True

    def _register(self, new: NewDocument) -> tuple[Document, RegisterOutcome]:
        self._count_arrival(new)
        return self._register_counted(new)

    def _register_counted(self, new: NewDocument) -> tuple[Document, RegisterOutcome]:
        """`_register` of a document whose arrival is counted (and blob claimed)."""
        existing = self._by_key(new)
        if existing is not None:
            if existing.sha256 == new.sha256:
                return existing, "unchanged"
            self._close(existing.ino, "overwrite")
            return self._insert_version(existing, **content_of(new)), "updated"
        self._ensure_directory(new.resolver, new.artifact_id)
        ino = self.take_ino()
        discriminator = new.source_url or new.sha256
        for attempt in itertools.count():
            basename = new.basename if attempt == 0 else naming.collision_name(
                new.basename, discriminator if attempt == 1 else f"{discriminator}#{attempt}")
            try:  # the path is usually free: try it rather than ask first
                with self.db.attempt():
                    return self._insert_new(ino, new, basename), "added"
            except UniqueViolation:
                if not self._path_taken(new.resolver, new.artifact_id, basename):
                    raise
        raise AssertionError("unreachable")

    def rename_document(self, ino: int, directory: Directory, basename: str,
                        replace: bool) -> Document:
        assert directory.artifact_id is not None
        with self._write():
            doc = self.get_document(ino)
            if doc is None:
                raise NotFound(f"no document {ino}")
            occupant = self.lookup_document(directory, basename)
            if occupant is not None and occupant.ino != ino:
                if not replace:
                    raise Conflict(f"{basename!r} exists")
                self._close(occupant.ino, "replaced")
            source_url = doc.source_url
            same_place = (doc.resolver, doc.artifact_id) == (directory.resolver,
                                                             directory.artifact_id)
            if source_url is not None and not same_place and self._one(
                    f"SELECT 1 FROM documents WHERE artifact_id = ? AND source_url = ? "
                    f"AND resolver = ? AND {_LIVE}",
                    (directory.artifact_id, source_url, directory.resolver)):
                raise Conflict(f"{directory.artifact_id} already has a record of {source_url}")
            self._close(ino, "rename")
            return self._insert_version(doc, resolver=directory.resolver,
                                        artifact_id=directory.artifact_id, basename=basename)

    def link_document(self, ino: int, directory: Directory, basename: str) -> Document:
        """A second record for the same blob at another path (the mount's link)."""
        assert directory.artifact_id is not None
        with self._write():
            doc = self.get_document(ino)
            if doc is None:
                raise NotFound(f"no document {ino}")
            if self.lookup_document(directory, basename) is not None:
                raise Conflict(f"{basename!r} exists")
            new = NewDocument(
                resolver=directory.resolver, artifact_id=directory.artifact_id,
                basename=basename, sha256=doc.sha256, bytes=doc.bytes,
                storage_uri=doc.storage_uri, source_url=doc.source_url,
                content_type=doc.content_type, run_id=doc.run_id, mtime_ns=doc.mtime_ns)
            if self._by_key(new) is not None:
                new = replace(new, source_url=None)
            return self._insert_new(self.take_ino(), new, basename)

    def unlink_document(self, ino: int) -> None:
        with self._write():
            if self.get_document(ino) is None:
                raise NotFound(f"no document {ino}")
            self._close(ino, "unlink")

    def set_mtime(self, ino: int, mtime_ns: int) -> None:
        with self._write():
            row = self._one(f"UPDATE documents SET mtime_ns = ?, updated_at = ? "
                            f"WHERE ino = ? AND {_LIVE} RETURNING resolver, artifact_id, "
                            "basename", (mtime_ns, time.time(), ino))
            if row is not None:
                self._changes.append(DocumentChange(ino, *row))

    def set_directory_mtime(self, ino: int, mtime_ns: int) -> None:
        with self._write():
            if ino == ROOT_INO:
                self.db.execute("INSERT INTO meta (key, value) VALUES ('root_mtime_ns', ?) "
                                  "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                  (mtime_ns,))
            else:
                now = time.time()
                self._archive_directory(ino, "mtime", now)
                row = self._one("UPDATE directories SET mtime_ns = ?, valid_from = ? "
                                "WHERE ino = ? RETURNING parent_ino, name", (mtime_ns, now, ino))
                if row is None:
                    raise NotFound(f"no directory {ino}")
                self._changes.append(DirectoryChange(ino, *row))

    def root_mtime_ns(self) -> int | None:
        row = self._one("SELECT value FROM meta WHERE key = 'root_mtime_ns'")
        if row is not None:
            return int(row[0])
        row = self._one("SELECT min(created_at) FROM directories")
        return None if row is None or row[0] is None else int(row[0] * 1e9)

    _UNSET: Any = ...

    def update_metadata(self, ino: int, *, source_url: str | None = _UNSET,
                        content_type: str | None = _UNSET,
                        run_id: str | None = _UNSET) -> Document:
        changes = {k: v for k, v in (("source_url", source_url), ("content_type", content_type),
                                     ("run_id", run_id)) if v is not self._UNSET}
        with self._write():
            doc = self.get_document(ino)
            if doc is None:
                raise NotFound(f"no document {ino}")
            url = changes.get("source_url", doc.source_url)
            if url is not None and url != doc.source_url and self._one(
                    f"SELECT 1 FROM documents WHERE artifact_id = ? AND source_url = ? "
                    f"AND resolver = ? AND {_LIVE}", (doc.artifact_id, url, doc.resolver)):
                raise Conflict(f"{doc.artifact_id} already has a record of {url}")
            self._close(ino, "metadata")
            return self._insert_version(doc, **changes)

    def add_variant(self, variant: Variant) -> None:
        with self._write():
            self._ensure_blobs({variant.sha256: variant.bytes})
            self.db.execute(
                "INSERT INTO variants (document_id, variant, storage_uri, bytes, "
                "content_type, sha256) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (document_id, variant) DO UPDATE SET storage_uri = "
                "excluded.storage_uri, bytes = excluded.bytes, content_type = "
                "excluded.content_type, sha256 = excluded.sha256",
                (variant.document_id, variant.variant, variant.storage_uri, variant.bytes,
                 variant.content_type, variant.sha256))

    def variants(self, document_id: int) -> list[Variant]:
        rows = self.db.rows(
            "SELECT document_id, variant, storage_uri, bytes, content_type, sha256 "
            "FROM variants WHERE document_id = ? ORDER BY variant", (document_id,))
        return [Variant(*r) for r in rows]

    # -- reports ----------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        documents, logical = self._one(
            f"SELECT count(*), coalesce(sum(bytes), 0) FROM documents WHERE {_LIVE}")
        blobs, physical = self._one("SELECT count(*), coalesce(sum(bytes), 0) FROM blobs "
                                    "WHERE state = 'present'")
        versions = self._one("SELECT count(*) FROM documents")[0]
        directories = self._one("SELECT count(*) FROM directories")[0]
        dedup_hits = self._one("SELECT coalesce(sum(value), 0) FROM counters "
                               "WHERE name = 'casfs_dedup_hits_total'")[0]
        figures = {"documents": documents, "blobs": blobs, "logical_bytes": logical,
                   "physical_bytes": physical, "versions": versions,
                   "directories": directories, "dedup_hits": dedup_hits}
        return {name: int(value) for name, value in figures.items()}

    def documents_by_ino(self, after_ino: int, limit: int) -> list[Document]:
        if self._past:
            return self._past.documents_by_ino(after_ino, limit)
        return [document_of(r) for r in self.db.rows(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE {_LIVE} AND ino > ? "
            "ORDER BY ino LIMIT ?", (after_ino, limit))]

    def iter_live_documents(self) -> Iterator[Document]:
        for row in self.db.stream(f"SELECT {_DOC_COLUMNS} FROM documents WHERE {_LIVE} "
                                     "ORDER BY id"):
            yield document_of(row)

    def blob_refcount(self, sha256: str) -> int:
        return int(self._one(f"SELECT count(*) FROM documents WHERE sha256 = ? AND {_LIVE}",
                             (sha256,))[0])

    # -- helpers (inside a write transaction) ------------------------------------
    def _count_arrival(self, new: NewDocument) -> None:
        self._count_arrivals([new])

    def _count_arrivals(self, news: list[NewDocument]) -> None:
        """Record the documents' blobs in the ledger and count their arrival."""
        self._ensure_blobs({new.sha256: new.bytes for new in news})
        self._bump_arrivals(news)

    def _bump_arrivals(self, news: list[NewDocument]) -> None:
        for new in news:
            labels = f'resolver="{_label(new.resolver)}"'
            if new.dedup_hit:
                self._bump("casfs_dedup_hits_total", labels, 1)
            self._bump("casfs_ingested_files_total", labels, 1)
            self._bump("casfs_ingested_bytes_total", labels, new.bytes)

    def resolve_path(self, path: str) -> Document | None:
        """The live document at a virtual path /<resolver>/<artifact>/<basename>."""
        parts = [p for p in path.split("/") if p]
        if len(parts) != 3:
            return None
        resolver = self.lookup_directory(ROOT_INO, parts[0])
        artifact = resolver and self.lookup_directory(resolver.ino, parts[1])
        return self.lookup_document(artifact, parts[2]) if artifact else None

    def _close(self, ino: int, change: str) -> None:
        row = self._one(f"UPDATE documents SET valid_to = ?, change = ? WHERE ino = ? "
                        f"AND {_LIVE} RETURNING resolver, artifact_id, basename",
                        (time.time(), change, ino))
        if row is not None:
            self._changes.append(DocumentChange(ino, *row))

    def _insert_new(self, ino: int, new: NewDocument, basename: str,
                    directory: Directory | None = None) -> Document:
        if directory is None:
            self._ensure_directory(new.resolver, new.artifact_id)
        return self._insert(**self._new_row(ino, new, basename, time.time()))

    @staticmethod
    def _new_row(ino: int, new: NewDocument, basename: str, now: float) -> dict[str, Any]:
        """The columns of a new document's first version."""
        created = new.created_at if new.created_at is not None else now
        mtime_ns = new.mtime_ns if new.mtime_ns is not None else int(created * 1e9)
        return dict(
            ino=ino, artifact_id=new.artifact_id, resolver=new.resolver,
            source_url=new.source_url, basename=basename, content_type=new.content_type,
            bytes=new.bytes, sha256=new.sha256, storage_uri=new.storage_uri, run_id=new.run_id,
            created_at=created, updated_at=now, mtime_ns=mtime_ns, valid_from=now)

    def _update_content(self, doc: Document, content: dict[str, Any]) -> Document:
        fields = {**content, "updated_at": time.time()}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        row = self._one(f"UPDATE documents SET {assignments} WHERE id = ? "
                        f"RETURNING {_DOC_COLUMNS}", (*fields.values(), doc.id))
        return self._changed(document_of(row))

    def _insert_version(self, previous: Document, **changes: Any) -> Document:
        """The next version of `previous` (already closed), with `changes` applied."""
        now = time.time()
        fields = {name: getattr(previous, name) for name in _DOC_COLUMNS.split(", ")
                  if name not in ("id", "valid_to", "change")}
        fields.update(changes, updated_at=now, valid_from=now)
        return self._insert(**fields)

    def _insert(self, **fields: Any) -> Document:
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        row = self._one(f"INSERT INTO documents ({names}) VALUES ({marks}) "
                        f"RETURNING {_DOC_COLUMNS}", tuple(fields.values()))
        return self._changed(document_of(row))

    def _changed(self, doc: Document) -> Document:
        self._changes.append(DocumentChange(doc.ino, doc.resolver, doc.artifact_id,
                                            doc.basename))
        return doc


def _implements_the_protocol(catalog: SqlCatalog) -> Catalog:
    return catalog  # mypy checks here that SqlCatalog is a Catalog
