"""`SqliteCatalog`: the shared rules (`SqlCatalog`) on an APSW connection.

What SQLite does its own way: the schema version is `PRAGMA user_version`, inode
numbers come from a counter row in `meta` (write transactions are serial, so a
hot row costs nothing), counters are one row per name and labels, and fsck asks
SQLite's own integrity and foreign-key checks.
"""

from __future__ import annotations

from pathlib import Path

import apsw

from casfs.catalog.sql_catalog import INO_BLOCK, SqlCatalog
from casfs.catalog.sqlite import schema
from casfs.catalog.sqlite.database import SqliteDatabase, translate
from casfs.errors import StoreError


class SqliteCatalog(SqlCatalog):
    local = True

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        db = SqliteDatabase(path, readonly=readonly)
        super().__init__(db)
        self.path = path
        self.conn = db.conn  # for the SQLite-only tools (backup, synthetic catalogs)
        try:
            if readonly:
                current = schema.schema_version(self.conn)
                if current != schema.SCHEMA_VERSION:
                    raise StoreError(
                        f"catalog schema version {current}, expected {schema.SCHEMA_VERSION}; "
                        "open it read-write once to migrate")
            else:
                schema.migrate(self.conn)
        except apsw.Error as e:
            db.close()
            raise translate(e) from e
        except BaseException:
            db.close()
            raise

    def _sync_commits(self, durable: bool) -> None:
        # In WAL mode, NORMAL syncs the log only at checkpoints: a commit stays
        # atomic, and a later FULL commit's fsync of the log takes every earlier one
        # to disk with it.
        self.db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")

    def _reserve(self) -> range:
        row = self.db.one("UPDATE meta SET value = value + ? WHERE key = 'next_ino' "
                          "RETURNING value", (INO_BLOCK,))
        assert row is not None
        return range(int(row[0]) - INO_BLOCK, int(row[0]))

    def _write_counters(self, deltas: dict[tuple[str, str], int]) -> None:
        self.db.executemany(
            "INSERT INTO counters (name, labels, value) VALUES (?, ?, ?) "
            "ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value",
            [(name, labels, amount) for (name, labels), amount in deltas.items()])

    def integrity_problems(self) -> list[str]:
        found = [row[0] for row in self.db.rows("PRAGMA integrity_check")]
        problems = [] if found == ["ok"] else found[:10]
        problems += [f"{table} row {rowid} points to a missing {parent} row"
                     for table, rowid, parent, _ in self.db.rows("PRAGMA foreign_key_check")]
        return problems
