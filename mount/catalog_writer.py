"""Every catalog write of a mount, on worker threads with connections of their own.

A write transaction ends with a commit that waits for the disk (SQLite's WAL fsync)
or for a server; on the trio thread that would stall every request of the mount.
Writes run in worker threads instead. SQLite takes one writer at a time anyway, so
an embedded catalog gets one thread and one connection (a limiter of one keeps the
writes in the order they were asked for); a server that takes writers in parallel
(PostgreSQL) gets a pool of them, so that files closed at once by several writers
commit at once. Each handler awaits its write before it answers the kernel, so what
one request causes is committed before anything that follows it. Inode numbers for
new files come from a block reserved through the writer, so a create waits for the
writer only once per block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from casfs.catalog import Catalog
from casfs.store import Store

T = TypeVar("T")
REMOTE_WRITERS = 8


class CatalogWriter:
    def __init__(self, store: Store) -> None:
        self._store = store
        self.catalog = store.open_catalog()  # the first connection; more on demand
        self._idle: list[Catalog] = [self.catalog]
        self._all: list[Catalog] = [self.catalog]
        self._limiter = trio.CapacityLimiter(1 if self.catalog.local else REMOTE_WRITERS)
        self._inos = range(0)

    @property
    def senders(self) -> set[str]:
        """Who this mount's writes are, in the catalog's announcements of them."""
        return {sender for c in self._all if (sender := getattr(c, "sender", None))}

    async def __call__(self, change: Callable[[Catalog], T]) -> T:
        """Run `change(catalog)` on a writer thread with a connection of its own."""
        async with self._limiter:
            catalog = self._idle.pop() if self._idle else None
            try:
                result, catalog = await trio.to_thread.run_sync(self._run, change, catalog)
            finally:
                if catalog is not None:
                    self._idle.append(catalog)
            return result

    def _run(self, change: Callable[[Catalog], T], catalog: Catalog | None
             ) -> tuple[T, Catalog]:
        if catalog is None:
            catalog = self._store.open_catalog()
            self._all.append(catalog)
        return change(catalog), catalog

    async def new_ino(self) -> int:
        if not self._inos:
            self._inos = await self(lambda catalog: catalog.reserve_inos())
        ino = self._inos.start
        self._inos = self._inos[1:]
        return ino

    def close(self) -> None:
        for catalog in self._all:
            catalog.close()
        self._all.clear()
        self._idle.clear()
