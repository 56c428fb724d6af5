"""The embedded catalog's connection: SQLite through APSW, in WAL mode.

Write transactions are BEGIN IMMEDIATE so that two processes never deadlock on a
lock upgrade; the busy timeout lets them queue instead. `synchronous=FULL`
because a close() that returned 0 promises a durable record (law 6). APSW's
errors become `casfs.errors` here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw

from casfs.catalog.database import Dialect, Row, translating
from casfs.errors import (
    CatalogBusy,
    CatalogError,
    CatalogFull,
    CatalogReadOnly,
    UniqueViolation,
)

BUSY_TIMEOUT_MS = 10_000

DIALECT = Dialect(
    json_array="json_array",
    glob=lambda column: f"{column} GLOB ?",
    glob_argument=lambda pattern: pattern,
    contains=lambda column: f"instr({column}, ?) > 0",
    distinct_list=lambda expression: f"group_concat(DISTINCT {expression})",
    random_fraction="(abs(random()) % 1000000) / 1000000.0",
)



def translate(error: apsw.Error) -> CatalogError | UniqueViolation:
    """The casfs error for an APSW one."""
    if isinstance(error, apsw.ConstraintError) and "UNIQUE" in str(error):
        return UniqueViolation(str(error))
    if isinstance(error, apsw.BusyError | apsw.LockedError):
        return CatalogBusy(f"the catalog stayed locked by other writers for "
                           f"{BUSY_TIMEOUT_MS // 1000} s; nothing was changed")
    if isinstance(error, apsw.FullError):
        return CatalogFull("the catalog's filesystem is full")
    if isinstance(error, apsw.ReadOnlyError):
        return CatalogReadOnly("the catalog is read-only")
    return CatalogError(f"the catalog: {error}")


_translated = translating(apsw.Error, translate)


class SqliteDatabase:
    dialect = DIALECT

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        flags = apsw.SQLITE_OPEN_READONLY if readonly else (
            apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        try:
            self.conn = apsw.Connection(str(path), flags=flags)
            self.conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            if not readonly:
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except apsw.Error as e:
            raise CatalogError(f"cannot open the catalog {path}: {e}") from e

    @_translated
    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return list(self.conn.execute(sql, args))

    @_translated
    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        for row in self.conn.execute(sql, args):
            return tuple(row)
        return None

    @_translated
    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        for _ in self.conn.execute(sql, args):
            pass

    @_translated
    def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, args)

    def stream(self, sql: str, args: Sequence[Any] = ()) -> Iterator[Row]:
        try:
            yield from self.conn.execute(sql, args)
        except apsw.Error as e:
            raise translate(e) from e

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:  # SQLite may have rolled back already
                self.conn.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    @contextmanager
    def attempt(self) -> Iterator[None]:
        yield  # a failed statement undoes only itself in SQLite

    def close(self) -> None:
        self.conn.close()
