"""Moving a store's SQLite catalog into an empty PostgreSQL database.

Everything is copied in one PostgreSQL transaction (the schema, directories, the
blob ledger, every version of every document, variants, counters, the root's
mtime, and the inode and id counters moved past what is there), so a move that is
killed leaves the database as it was: empty. The copy is then checked (the count
of every table, the counters, and a sample of documents field by field) before
the caller switches the store to the new catalog. A database that already holds
this very store's copy (the switch did not happen) is checked and used; any other
non-empty database is refused.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from casfs.catalog.postgres import schema
from casfs.catalog.postgres.database import PostgresDatabase
from casfs.catalog.sql_catalog import INO_BLOCK, SqlCatalog
from casfs.catalog.sql_queries import DOC_COLUMNS
from casfs.errors import StoreError

# table -> columns copied, in an order that keeps foreign keys satisfied
TABLES: dict[str, str] = {
    "directories": "ino, parent_ino, name, resolver, artifact_id, created_at, mtime_ns, "
                   "valid_from",
    "directory_history": "ino, parent_ino, name, resolver, artifact_id, created_at, mtime_ns, "
                         "valid_from, valid_to, change",
    "blobs": "sha256, bytes, first_seen, last_verified_at, state",
    "snapshots": "name, at, note, created_at",
    "documents": DOC_COLUMNS,
    "variants": "document_id, variant, storage_uri, bytes, content_type, sha256",
}
SAMPLE = 1000
Progress = Callable[[str, int], None]  # (table, rows copied so far)


@dataclass
class MoveReport:
    counts: dict[str, int] = field(default_factory=dict)  # rows per table in the source
    counters: int = 0
    state: str = "empty"  # of the target: empty, copied (this store's copy), or other
    copied: bool = False
    checked: int = 0  # documents compared field by field

    def as_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "counters": self.counters, "target": self.state,
                "copied": self.copied, "checked_documents": self.checked}


def fingerprint(source: SqlCatalog, name: str) -> int:
    """What identifies a store's catalog (`name`: the store) in a copy: a number kept in
    the copy's meta, so that a rerun knows its own copy."""
    row = source.db.one("SELECT count(*), coalesce(max(id), 0) FROM documents")
    dirs = source.db.one("SELECT count(*), coalesce(max(ino), 0) FROM directories")
    text = f"{name}|{row}|{dirs}".encode()
    return int(hashlib.sha256(text).hexdigest()[:15], 16)


def survey(source: SqlCatalog, target: PostgresDatabase) -> MoveReport:
    """What a move would copy, and what the target holds now."""
    report = MoveReport()
    for table in TABLES:
        report.counts[table] = int(source.db.one(f"SELECT count(*) FROM {table}")[0])  # type: ignore[index]
    report.counters = len(source.counters())
    report.state = _target_state(target)
    return report


def _target_state(target: PostgresDatabase) -> str:
    if schema.schema_version(target) == 0:
        if target.one("SELECT 1 FROM pg_tables WHERE schemaname = 'public' LIMIT 1"):
            return "other"  # tables that are not a casfs catalog
        return "empty"
    if target.one("SELECT 1 FROM meta WHERE key = 'migrated_from'"):
        return "copied"
    for table in (*TABLES, "counters"):
        if target.one(f"SELECT 1 FROM {table} LIMIT 1"):
            return "other"
    return "empty"


def move(source: SqlCatalog, target: PostgresDatabase, *, mark: int,
         progress: Progress | None = None) -> MoveReport:
    """Copy `source` into `target` in one transaction, unless it holds the copy already
    (marked `mark`); then check the copy. StoreError when the target holds anything
    else, or when the check finds a difference."""
    report = survey(source, target)
    if report.state == "other":
        raise StoreError("the target database is not empty: migrate needs an empty "
                         "database (or one holding this store's earlier copy)")
    if report.state == "copied":
        row = target.one("SELECT value FROM meta WHERE key = 'migrated_from'")
        if row is None or int(row[0]) != mark:
            raise StoreError("the target database holds a copy of another catalog")
    else:
        with target.transaction():
            if schema.schema_version(target) == 0:
                for version, migration in enumerate(schema.MIGRATIONS):
                    migration(target)
                    target.execute("UPDATE schema_version SET version = ?", (version + 1,))
            for table, columns in TABLES.items():
                rows = source.db.stream(f"SELECT {columns} FROM {table} ORDER BY 1")
                target.copy(table, columns, rows, _reporting(progress, table))
            _copy_counters(source, target)
            _move_counters_past(source, target)
            target.execute("INSERT INTO meta (key, value) VALUES ('migrated_from', ?)", (mark,))
        # Statistics now, not at autovacuum's next visit: without them the planner may
        # find a document by path through the key index, reading its whole directory
        # (contrib/bench/round_trips.py: rounds of 16 before and after ANALYZE).
        target.execute("ANALYZE")
        report.copied = True
    report.checked = check(source, target, report)
    return report


def _reporting(progress: Progress | None, table: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda copied: progress(table, copied)


def _copy_counters(source: SqlCatalog, target: PostgresDatabase) -> None:
    target.executemany("INSERT INTO counters (name, labels, shard, value) VALUES (?, ?, 0, ?)",
                       source.counters())
    root = source.db.one("SELECT value FROM meta WHERE key = 'root_mtime_ns'")
    if root is not None:
        target.execute("INSERT INTO meta (key, value) VALUES ('root_mtime_ns', ?)", (root[0],))


def _move_counters_past(source: SqlCatalog, target: PostgresDatabase) -> None:
    """New inode blocks and document ids start above every one copied."""
    highest = max(int(value) for (value,) in source.db.rows(
        "SELECT coalesce(max(ino), 1) FROM directories UNION ALL "
        "SELECT coalesce(max(ino), 1) FROM documents UNION ALL "
        "SELECT value FROM meta WHERE key = 'next_ino'"))
    target.execute("SELECT setval('inode_blocks', ?)", (math.ceil(highest / INO_BLOCK) + 1,))
    target.execute("SELECT setval(pg_get_serial_sequence('documents', 'id'), "
                   "(SELECT coalesce(max(id), 0) + 1 FROM documents), false)")


def check(source: SqlCatalog, target: PostgresDatabase, report: MoveReport) -> int:
    """Compare the copy with the source: counts, counters, a sample of documents."""
    for table, count in report.counts.items():
        copied = int(target.one(f"SELECT count(*) FROM {table}")[0])  # type: ignore[index]
        if copied != count:
            raise StoreError(f"the copy has {copied} rows in {table}, the source {count}")
    theirs = {(n, labels): int(v) for n, labels, v in target.rows(
        "SELECT name, labels, sum(value) FROM counters GROUP BY name, labels")}
    for name, labels, value in source.counters():
        if theirs.get((name, labels)) != value:
            raise StoreError(f"counter {name}{{{labels}}} is {theirs.get((name, labels))} "
                             f"in the copy, {value} in the source")
    ids = [row[0] for row in source.db.rows("SELECT id FROM documents")]
    sample = random.sample(ids, min(SAMPLE, len(ids)))
    for document_id in sample:
        mine = source.db.one(f"SELECT {DOC_COLUMNS} FROM documents WHERE id = ?",
                             (document_id,))
        copied_row = target.one(f"SELECT {DOC_COLUMNS} FROM documents WHERE id = ?",
                                (document_id,))
        if mine != copied_row:
            raise StoreError(f"document {document_id} differs in the copy")
    return len(sample)
