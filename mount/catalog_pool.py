"""Catalog connections for worker threads: opened on first use, kept for the next job.

A catalog object is used by one thread at a time; a pool of them lets up to `size`
jobs run at once, each in a worker thread with a connection of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from casfs.catalog import Catalog
from casfs.store import Store

T = TypeVar("T")


class CatalogPool:
    def __init__(self, store: Store, size: int, first: Catalog | None = None) -> None:
        self._store = store
        self._idle: list[Catalog] = [first] if first else []
        self.connections: list[Catalog] = list(self._idle)
        self._limiter = trio.CapacityLimiter(size)

    async def run(self, job: Callable[[Catalog], T]) -> T:
        """`job(catalog)` in a worker thread, on a connection no other job is using."""
        async with self._limiter:
            catalog = self._idle.pop() if self._idle else None
            try:
                result, catalog = await trio.to_thread.run_sync(self._run, job, catalog)
            finally:
                if catalog is not None:
                    self._idle.append(catalog)
            return result

    def _run(self, job: Callable[[Catalog], T], catalog: Catalog | None) -> tuple[T, Catalog]:
        if catalog is None:
            catalog = self._store.open_catalog()
            self.connections.append(catalog)
        return job(catalog), catalog

    def close(self) -> None:
        for catalog in self.connections:
            catalog.close()
        self.connections.clear()
        self._idle.clear()
