"""Every catalog write of a mount, on one worker thread with a connection of its own.

A write transaction ends with an fsync of the WAL; on the trio thread that would
stall every request of the mount, reads included, for as long as the disk takes.
Here writes queue for one worker thread (a limiter of one keeps them in order)
while the loop's own connection goes on reading; WAL shows each commit to it at
once. Inode numbers for new files come from a block reserved through the writer,
so a create waits for the writer only once per block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from casfs.catalog import Catalog

T = TypeVar("T")


class CatalogWriter:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._limiter = trio.CapacityLimiter(1)
        self._inos = range(0)

    async def __call__(self, change: Callable[[Catalog], T]) -> T:
        """Run `change(catalog)` on the writer's thread and connection."""
        return await trio.to_thread.run_sync(change, self.catalog, limiter=self._limiter)

    async def new_ino(self) -> int:
        if not self._inos:
            self._inos = await self(lambda catalog: catalog.reserve_inos())
        ino = self._inos.start
        self._inos = self._inos[1:]
        return ino

    def close(self) -> None:
        self.catalog.close()
