"""Every catalog read of a mount, without holding up the trio loop.

An embedded catalog (SQLite in the store) answers a point query in microseconds,
less than a hop to a worker thread costs, so it is asked on the trio thread. A
catalog across the network (PostgreSQL) takes a round trip per query; asked on the
trio thread, one slow answer would stall every request of the mount. So it is
asked from worker threads, each read on a connection of its own taken from a small
pool (opened on first use, kept for the next read).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from casfs.catalog import Catalog
from casfs.store import Store

T = TypeVar("T")
THREADS = 8


class CatalogReader:
    def __init__(self, store: Store, threads: int = THREADS) -> None:
        self._store = store
        self._inline = store.catalog if store.catalog.local else None
        self._idle: list[Catalog] = []
        self._all: list[Catalog] = []
        self._limiter = trio.CapacityLimiter(threads)

    async def __call__(self, query: Callable[[Catalog], T]) -> T:
        """`query(catalog)`: inline on an embedded catalog, else in a worker thread."""
        if self._inline is not None:
            return query(self._inline)
        async with self._limiter:
            catalog = self._idle.pop() if self._idle else None
            try:
                result, catalog = await trio.to_thread.run_sync(self._run, query, catalog)
            finally:
                if catalog is not None:
                    self._idle.append(catalog)
            return result

    def _run(self, query: Callable[[Catalog], T], catalog: Catalog | None
             ) -> tuple[T, Catalog]:
        if catalog is None:
            catalog = self._store.open_catalog()
            self._all.append(catalog)
        return query(catalog), catalog

    def close(self) -> None:
        for catalog in self._all:
            catalog.close()
        self._all.clear()
        self._idle.clear()
