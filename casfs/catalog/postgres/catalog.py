"""`PostgresCatalog`: the shared rules (`SqlCatalog`) on a PostgreSQL connection.

What PostgreSQL does its own way, for many hosts at once:
- inode numbers: one `nextval` of the sequence `inode_blocks` per block, no hot row;
- counters: each connection adds to its own shard row; readers sum them;
- gc across hosts (law 3): every registration takes a shared advisory lock on each
  of its blobs (sorted, so two never deadlock) before it checks that they are
  present; gc and quarantine take the exclusive one with `pg_try_advisory_xact_lock`
  and skip a blob that a registration holds. Both are transaction locks, so they go
  with the commit. A registration that waited for gc finds the blob gone and
  restores it from its staging file.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from typing import Any

from casfs.catalog import BlobCheck
from casfs.catalog import changes as announced
from casfs.catalog.changes import Change
from casfs.catalog.postgres import schema
from casfs.catalog.postgres.database import PostgresDatabase
from casfs.catalog.sql_catalog import INO_BLOCK, SqlCatalog
from casfs.catalog.sql_queries import DOC_COLUMNS
from casfs.errors import CatalogError, StoreError
from casfs.records import Document, PathWrite

SHARDS = 64
# The columns of a new document (`SqlCatalog._new_row`) and their types, for the
# arrays one statement inserts a round's documents from.
NEW_COLUMN_TYPES = {
    "ino": "bigint", "artifact_id": "text", "resolver": "text", "source_url": "text",
    "basename": "text", "content_type": "text", "bytes": "bigint", "sha256": "text",
    "storage_uri": "text", "run_id": "text", "created_at": "double precision",
    "updated_at": "double precision", "mtime_ns": "bigint", "valid_from": "double precision"}
log = logging.getLogger("casfs.catalog")


def blob_lock_key(sha256: str) -> int:
    """The advisory lock of a blob: its hash's first 8 bytes as a signed bigint."""
    return int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True)


class PostgresCatalog(SqlCatalog):
    local = False

    def __init__(self, url: str, *, readonly: bool = False,
                 answer_within: float | None = None) -> None:
        db = PostgresDatabase(url, readonly=readonly, answer_within=answer_within)
        super().__init__(db)
        self.url = url
        self.pg = db
        self._shard = random.randrange(SHARDS)
        try:
            if readonly:
                current = schema.schema_version(db)
                if current != schema.SCHEMA_VERSION:
                    raise StoreError(
                        f"catalog schema version {current}, expected {schema.SCHEMA_VERSION}; "
                        "run 'casfs init' with this catalog once to create or migrate it")
            else:
                schema.migrate(db)
        except BaseException:
            db.close()
            raise

    def _sync_commits(self, durable: bool) -> None:
        # Relaxed, the server acknowledges before its log is flushed (it flushes
        # within a few hundred milliseconds); a later synchronous commit waits for
        # the log up to itself, and so for every earlier one.
        self.db.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")

    def _reserve(self) -> range:
        row = self.db.one("SELECT nextval('inode_blocks')")
        assert row is not None
        start = int(row[0]) * INO_BLOCK
        return range(start, start + INO_BLOCK)

    def _write_counters(self, deltas: dict[tuple[str, str], int]) -> None:
        self.db.execute(*self._counters_statement(deltas))

    def _counters_statement(self, deltas: dict[tuple[str, str], int]
                            ) -> tuple[str, list[object]]:
        rows = sorted(deltas.items())  # one order: two transactions never deadlock
        return ("INSERT INTO counters (name, labels, shard, value) SELECT n, l, ?, v "
                "FROM unnest(CAST(? AS text[]), CAST(? AS text[]), CAST(? AS bigint[])) "
                "AS t (n, l, v) "
                "ON CONFLICT (name, labels, shard) DO UPDATE "
                "SET value = counters.value + excluded.value",
                [self._shard, [name for (name, _), _ in rows],
                 [labels for (_, labels), _ in rows], [amount for _, amount in rows]])

    def _insert_where_free(self, rows: list[dict[str, Any]]) -> tuple[str, list[object]]:
        # A column an array: the statement's text is the same for any number of rows,
        # so psycopg converts it once and the server plans it once (a prepared
        # statement), where a VALUES list of each round's length was parsed and
        # planned anew every round.
        if rows[0].keys() != NEW_COLUMN_TYPES.keys():
            raise AssertionError("NEW_COLUMN_TYPES must name the columns of _new_row")
        return (f"INSERT INTO documents ({', '.join(NEW_COLUMN_TYPES)}) SELECT * FROM unnest("
                + ", ".join(f"CAST(? AS {kind}[])" for kind in NEW_COLUMN_TYPES.values())
                + f") ON CONFLICT DO NOTHING RETURNING {DOC_COLUMNS}",
                [[row[name] for row in rows] for name in NEW_COLUMN_TYPES])

    def live_hashes_by_key(self, keys: list[tuple[str, str, str]]
                           ) -> dict[tuple[str, str, str], str]:
        # One index lookup a key, whatever the planner knows: the portable form (a
        # VALUES list) was planned as a scan of every live document whenever the
        # table had no statistics yet (a first import into a new database: 2.8 ms
        # for 32 keys among 10,240 documents, growing with the catalog, so an import
        # slowed down as it went). LIMIT 1 keeps the subquery a per-key lookup.
        if not keys:
            return {}
        rows = self.db.rows(
            "SELECT k.a, k.u, k.r, d.sha256 FROM unnest(CAST(? AS text[]), "
            "CAST(? AS text[]), CAST(? AS text[])) AS k (a, u, r) CROSS JOIN LATERAL "
            "(SELECT sha256 FROM documents WHERE artifact_id = k.a AND source_url = k.u "
            "AND resolver = k.r AND valid_to IS NULL LIMIT 1) AS d",
            [[a for a, _, _ in keys], [u for _, u, _ in keys], [r for _, _, r in keys]])
        return {(a, u, r): sha for a, u, r, sha in rows}

    def _lock_blobs_in_use(self, sha256s: list[str]) -> None:
        # One statement for a whole round, taking them in the caller's (sorted) order.
        if sha256s:
            self.db.execute("SELECT count(pg_advisory_xact_lock_shared(k)) "
                            "FROM unnest(CAST(? AS bigint[])) AS k",
                            ([blob_lock_key(sha256) for sha256 in sha256s],))

    def _claim_blobs(self, sizes: dict[str, int], present: BlobCheck | None) -> None:
        if not sizes:
            return
        claim, args = self._claim_statements(sizes)
        self.db.execute(f"WITH {claim} SELECT 1", args)
        self._check_present(sorted(sizes), present)

    def _claim_and_insert(self, sizes: dict[str, int], present: BlobCheck | None,
                          writes: list[PathWrite]) -> dict[int, Document]:
        # A round of closes in one statement (each round trip to the server costs the
        # writers' closes its wait, and more when the machine is busy): the locks and
        # the ledger's rows, the counters so far, and the new documents. The rows
        # it inserts are checked against `blobs` at its end, when the ledger's rows
        # are there; `present` is checked after it, under the locks.
        if not writes or not sizes:
            return super()._claim_and_insert(sizes, present, writes)
        claim, args = self._claim_statements(sizes)
        deltas = self._take_counter_deltas()
        if deltas:
            counters, counter_args = self._counters_statement(deltas)
            claim += f", counted AS ({counters})"
            args += counter_args
        insert, insert_args = self._insert_where_free(self._new_rows(writes))
        rows = self.db.rows(f"WITH {claim} {insert}", args + insert_args)
        self._check_present(sorted(sizes), present)
        return self._inserted(rows)

    @staticmethod
    def _claim_statements(sizes: dict[str, int]) -> tuple[str, list[object]]:
        """`locked` and `claimed`, to follow a WITH: the blobs' shared advisory locks
        (sorted, so two writers never deadlock; the uncorrelated subquery runs once,
        before `claimed` writes its first row), and their ledger rows as present."""
        names = sorted(sizes)
        return ("locked AS (SELECT count(pg_advisory_xact_lock_shared(k)) AS n "
                "FROM unnest(CAST(? AS bigint[])) AS k), "
                "claimed AS (INSERT INTO blobs (sha256, bytes, first_seen) "
                "SELECT s, b, ? FROM unnest(CAST(? AS text[]), CAST(? AS bigint[])) AS t (s, b) "
                "WHERE (SELECT n FROM locked) >= 0 "
                "ON CONFLICT (sha256) DO UPDATE SET state = 'present')",
                [[blob_lock_key(sha256) for sha256 in names], time.time(), names,
                 [sizes[sha256] for sha256 in names]])

    def _announce(self, changes: list[Change]) -> None:
        try:
            for payload in announced.encode(self.sender, changes):
                self.pg.notify(announced.CHANNEL, payload)  # after the commit, on its own
        except CatalogError as e:
            log.warning("could not announce %d change(s): %s", len(changes), e)

    def listen(self, timeout: float) -> Iterator[tuple[str, list[Change]]]:
        """(sender, changes) of every change other connections announce, for about
        `timeout` seconds at a time (then the iterator ends: call again). Raises
        CatalogUnavailable when the connection broke; announcements sent while no
        one listened are lost for good (the cache timeout covers them)."""
        for payload in self.pg.notifications(announced.CHANNEL, timeout):
            try:
                yield announced.decode(payload)
            except ValueError as e:
                log.warning("ignored an announcement: %s", e)

    def lock_blob_for_removal(self, sha256: str) -> bool:
        row = self.db.one("SELECT pg_try_advisory_xact_lock(?)", (blob_lock_key(sha256),))
        return bool(row and row[0])
