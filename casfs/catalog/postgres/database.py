"""The shared catalog's connection: PostgreSQL through psycopg 3 (sync, one thread).

The shared SQL uses `?`; psycopg wants `%s` (and `%%` for a literal `%`), so each
statement is translated once and cached. Transactions are `BEGIN ... COMMIT` at
READ COMMITTED, the server's default: what must stay true until commit is held by
row locks, unique indexes and advisory locks (see `PostgresCatalog`). A failed
statement aborts the whole transaction in PostgreSQL, so `attempt` wraps one in a
savepoint. psycopg's errors become `casfs.errors` here and nowhere else; a
connection that broke, or that the server closed while it was idle (a restart), is
opened again on the next call.

A server can also stop answering without closing anything: a stopped or swamped
process, or a network that drops packets. libpq bounds only the connect. A FUSE
request that the daemon has taken is waited for uninterruptibly by the kernel, so a
`stat` waiting on such a server hung in state D, where not even SIGKILL ends it
(seen with the server stopped by SIGSTOP, `tests/test_catalog_outage.py`). With
`answer_within`, every wait for the server ends after that many seconds (and a
connect after as many, 2 at the least): the connection is dropped (a query in
flight on it is abandoned, a transaction rolled back by the server) and the call
fails with CatalogUnavailable; the next call opens a new one. Without it (the
command-line tools, whose long statements may take minutes, and whose user can
press Ctrl-C) a call waits as long as it takes.
"""

from __future__ import annotations

import functools
import math
import re
import select
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.abc import PQGen

from casfs.catalog.database import Dialect, Row, translating
from casfs.errors import (
    CatalogBusy,
    CatalogError,
    CatalogFull,
    CatalogRace,
    CatalogReadOnly,
    CatalogUnavailable,
    UniqueViolation,
)

CONNECT_TIMEOUT_S = 10
MIN_CONNECT_TIMEOUT_S = 2  # libpq takes less than 2 s as 2
WAIT_INTERVAL_S = 0.1  # how often a wait for the server looks for Ctrl-C (psycopg's)
LOCK_TIMEOUT_MS = 10_000  # as long as SQLite's busy timeout
GATHER_S = 0.02  # after one announcement, how long a listener waits for more
RV = TypeVar("RV")


def glob_to_regex(pattern: str) -> str:
    """A shell glob (`*`, `?`, `[...]`) as an anchored POSIX regular expression."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and "]" in pattern[i + 2:] + pattern[i + 1:i + 2]:
            end = pattern.index("]", i + 2) if pattern[i + 1:i + 2] == "]" else \
                pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + "$"


DIALECT = Dialect(
    json_array="json_build_array",
    glob=lambda column: f"{column} ~ ?",
    glob_argument=glob_to_regex,
    contains=lambda column: f"strpos({column}, ?) > 0",
    distinct_list=lambda expression: f"string_agg(DISTINCT {expression}, ',')",
    random_fraction="random()",
)



@functools.lru_cache(maxsize=512)
def to_psycopg(sql: str) -> str:
    """`?` placeholders as `%s`; a literal `%` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def translate(error: psycopg.Error) -> CatalogError | UniqueViolation:
    """The casfs error for a psycopg one."""
    if isinstance(error, pg_errors.UniqueViolation):
        return UniqueViolation(str(error).splitlines()[0])
    if isinstance(error, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        return CatalogRace(str(error).splitlines()[0])
    if isinstance(error, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        return CatalogBusy(f"the catalog stayed locked by other writers for "
                           f"{LOCK_TIMEOUT_MS // 1000} s; nothing was changed")
    if isinstance(error, pg_errors.DiskFull | pg_errors.OutOfMemory):
        return CatalogFull(f"the catalog server is out of room: {error}")
    if isinstance(error, pg_errors.ReadOnlySqlTransaction):
        return CatalogReadOnly("the catalog is read-only")
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return CatalogUnavailable(f"the catalog server cannot be reached: {first}")
    return CatalogError(f"the catalog: {str(error).strip()}")


_translated = translating(psycopg.Error, translate)


class _BoundedConnection(psycopg.Connection[tuple[Any, ...]]):
    """A connection whose waits for the server end after `answer_within` seconds."""

    answer_within: float | None = None

    def wait(self, gen: PQGen[RV], interval: float = WAIT_INTERVAL_S,
             timeout: float | None = None) -> RV:
        bound = self.answer_within
        if bound is None or timeout is not None:  # a wait with a bound of its own
            return super().wait(gen, interval, timeout)
        started = time.monotonic()
        try:
            return super().wait(gen, interval, bound)
        except psycopg.OperationalError:
            if time.monotonic() - started < bound:
                raise  # the server answered, or the connection broke: not a timeout
            self.pgconn.finish()  # what is in flight is abandoned: broken from now on
            raise psycopg.OperationalError(f"no answer within {bound:g} s") from None


def _returns_rows(cursor: psycopg.Cursor[Row]) -> bool:
    """Whether the last statement returned rows (its result's status, rather than
    `description`, which builds an object per column on every call)."""
    result = cursor.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _fetch_all(cursor: psycopg.Cursor[Row]) -> list[Row]:
    """The rows of the last statement, none when it returns none."""
    return cursor.fetchall() if _returns_rows(cursor) else []


def _fetch_one(cursor: psycopg.Cursor[Row]) -> Row | None:
    return cursor.fetchone() if _returns_rows(cursor) else None


class PostgresDatabase:
    dialect = DIALECT

    def __init__(self, url: str, *, readonly: bool = False,
                 answer_within: float | None = None) -> None:
        self.url = url
        self.readonly = readonly
        self.answer_within = answer_within  # see the module's docstring
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._in_transaction = False
        self._listening: set[str] = set()
        self._idle = select.poll()  # the connection's socket, once open (`connection`)
        self.connection()  # fail now, with the reason, rather than at first use

    @_translated
    def connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The open connection, opened again if it broke (outside a transaction)."""
        conn = self._conn
        if conn is not None and not conn.closed and (
                self._in_transaction or self._listening or not self._idle.poll(0)):
            return conn
        if self._in_transaction:
            raise CatalogUnavailable("the connection to the catalog server broke in a "
                                     "transaction; nothing of it was committed")
        if conn is not None:
            conn.close()
            self._conn = None
        options = f"-c lock_timeout={LOCK_TIMEOUT_MS}"
        if self.readonly:
            options += " -c default_transaction_read_only=on"
        self._listening = set()
        connect_within = CONNECT_TIMEOUT_S if self.answer_within is None else \
            min(CONNECT_TIMEOUT_S, max(MIN_CONNECT_TIMEOUT_S, math.ceil(self.answer_within)))
        connection = _BoundedConnection.connect(self.url, autocommit=True, options=options,
                                                connect_timeout=connect_within)
        connection.answer_within = self.answer_within
        # The server spoke, or hung up, while nothing was asked of the connection: a
        # restart sends every client a farewell and closes. An idle connection that
        # does not listen has nothing else to read (short of a rare notice, for which
        # a new connection does no harm), so one poll before each call tells. Without
        # it, the first call after a restart failed on every connection a mount held.
        self._idle = select.poll()
        self._idle.register(connection.pgconn.socket, select.POLLIN)
        self._conn = connection
        return connection

    @_translated
    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.connection().cursor() as cursor:
            cursor.execute(to_psycopg(sql), args)
            return _fetch_all(cursor)

    @_translated
    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        with self.connection().cursor() as cursor:
            cursor.execute(to_psycopg(sql), args)
            return _fetch_one(cursor)

    @_translated
    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        self.connection().execute(to_psycopg(sql), args)

    @_translated
    def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        with self.connection().cursor() as cursor:
            cursor.executemany(to_psycopg(sql), args)

    def stream(self, sql: str, args: Sequence[Any] = ()) -> Iterator[Row]:
        try:
            with self.connection().cursor() as cursor:
                yield from cursor.stream(to_psycopg(sql), args)
        except psycopg.Error as e:
            raise translate(e) from e

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # Not pipelined: with group commit, psycopg's pipeline cost more CPU in the
        # mount (2.77-2.93 ms per small file with 8 writers) than the round trips it
        # saved (2.41-2.65 ms without), and the daemon's CPU is what bounds it.
        connection = self.connection()
        self._in_transaction = True
        try:
            with connection.transaction():
                yield
        except psycopg.Error as e:
            raise translate(e) from e
        finally:
            self._in_transaction = False

    @contextmanager
    def attempt(self) -> Iterator[None]:
        try:
            with self.connection().transaction():  # a savepoint inside a transaction
                yield
        except psycopg.Error as e:
            raise translate(e) from e

    def copy(self, table: str, columns: str, rows: Iterable[Sequence[Any]],
             progress: Callable[[int], None] | None = None) -> int:
        """COPY `rows` into `table` (inside a transaction, for a bulk load)."""
        count = 0
        try:
            with self.connection().cursor() as cursor, \
                    cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
                    if progress is not None and count % 10_000 == 0:
                        progress(count)
        except psycopg.Error as e:
            raise translate(e) from e
        if progress is not None:
            progress(count)
        return count

    def notify(self, channel: str, payload: str) -> None:
        self.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def notifications(self, channel: str, timeout: float) -> list[str]:
        """Payloads sent on `channel`: as soon as one arrives, with any others already
        waiting; none after `timeout` seconds. The connection is free again when this
        returns (psycopg holds it while it waits)."""
        try:
            connection = self.connection()
            if channel not in self._listening:
                connection.execute(f"LISTEN {channel}")
                self._listening.add(channel)
            got = [n.payload for n in connection.notifies(timeout=timeout, stop_after=1)]
            if got:
                # Busy writers announce a commit each: take what arrives meanwhile in
                # one wake-up rather than one each (a wake-up costs the daemon more CPU
                # than the payload).
                time.sleep(GATHER_S)
                got += [n.payload for n in connection.notifies(timeout=0.001)]
            return got
        except psycopg.Error as e:
            self._listening.clear()
            raise translate(e) from e

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
