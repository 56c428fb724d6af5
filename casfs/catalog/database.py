"""The seam between the catalog's rules and a database: `Database` and `Dialect`.

The rules (versions, collision names, directories, the blob ledger, reports) are
written once, in `sql_catalog`, `sql_ledger` and `sql_queries`, in SQL that SQLite
and PostgreSQL both speak, with `?` for parameters. A backend supplies a
`Database`: it runs that SQL on its driver, turns the driver's errors into
`casfs.errors` at its edge, and says in its `Dialect` how to write the few
functions the two spell differently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

Row = tuple[Any, ...]
P = ParamSpec("P")
T = TypeVar("T")


def translating(driver_error: type[Exception], translate: Callable[[Any], Exception]
                ) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """A decorator for a backend's methods: its driver's errors leave them as the
    casfs errors `translate` makes of them, and as nothing else."""
    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return function(*args, **kwargs)
            except driver_error as e:
                raise translate(e) from e
        return wrapper
    return decorate


@dataclass(frozen=True)
class Dialect:
    json_array: str  # a function that makes a JSON array of its arguments
    glob: Callable[[str], str]  # SQL that tests a column against a glob pattern (?)
    glob_argument: Callable[[str], str]  # the pattern as that SQL wants it
    contains: Callable[[str], str]  # SQL: the column contains the text (?)
    distinct_list: Callable[[str], str]  # comma-separated distinct values of an expression
    random_fraction: str  # a random number in [0, 1), new for every row


class Database(Protocol):
    """One connection to a catalog database, used by one thread at a time.

    Every method raises only `casfs.errors`: `UniqueViolation` when a statement
    would break a unique index, `CatalogBusy` when other writers hold the catalog
    for longer than the backend waits, `CatalogFull`, `CatalogReadOnly`,
    `CatalogUnavailable` (the server went away: a later call may work again), and
    `CatalogError` for the rest.
    """

    dialect: Dialect

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """Run `sql` and return every row; no cursor stays open afterwards."""
        ...

    def one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """The first row of `sql`, or None."""
        ...

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None: ...

    def stream(self, sql: str, args: Sequence[Any] = ()) -> Iterator[Row]:
        """Rows one at a time, for long reports. The caller must not write through
        this connection until the iterator is exhausted or closed."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """A write transaction: it holds whatever lock the backend needs so that
        what it read stays true until it commits (SQLite: BEGIN IMMEDIATE; PostgreSQL:
        row and advisory locks). Commits at the end, rolls back on an exception."""
        ...

    def attempt(self) -> AbstractContextManager[None]:
        """Inside a transaction: a statement that may raise UniqueViolation, after
        which the transaction goes on (PostgreSQL needs a savepoint for that)."""
        ...

    def close(self) -> None: ...
