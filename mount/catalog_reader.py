"""Every catalog read of a mount, without holding up the trio loop.

An embedded catalog (SQLite in the store) answers a point query in microseconds,
less than a hop to a worker thread costs, so it is asked on the trio thread. A
catalog across the network (PostgreSQL) takes a round trip per query; asked on the
trio thread, one slow answer would stall every request of the mount. So it is
asked from worker threads, each read on a connection of its own from a small pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from casfs.catalog import Catalog
from casfs.store import Store

from .catalog_pool import CatalogPool

T = TypeVar("T")
THREADS = 8


class CatalogReader:
    def __init__(self, store: Store, threads: int = THREADS) -> None:
        self._inline = store.catalog if store.catalog.local else None
        self._pool = CatalogPool(store, threads)

    async def __call__(self, query: Callable[[Catalog], T]) -> T:
        """`query(catalog)`: inline on an embedded catalog, else in a worker thread."""
        if self._inline is not None:
            return query(self._inline)
        return await self._pool.run(query)

    def close(self) -> None:
        self._pool.close()
