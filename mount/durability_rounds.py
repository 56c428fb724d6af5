"""`-o durability=batch`: the rounds that make a bulk load's closes durable.

In this mode a close returns before its file is registered (closes_behind.py; the
blob is placed without an fsync, the record committed without waiting for the disk),
and law 6's "durable" comes later, for many closes at once: every `interval` seconds
when the mount wrote anything, when a writer calls fsync (which returns only after a
round that started after it), and at unmount. A round first waits for the
registrations of the closes before it. What a round does, and how a crash before it
is recovered, is `casfs.bulk_load`'s. The disk syncs run on a worker thread and the
catalog's commit on the writer's own connection, between two registrations: closes
go on meanwhile.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import outcome
import trio

from casfs.bulk_load import BulkLoad

from .catalog_writer import CatalogWriter
from .rounds import Rounds

log = logging.getLogger("casfs.mount")


class DurabilityRounds:
    def __init__(self, bulk: BulkLoad, writer: CatalogWriter, interval: float,
                 registered: Callable[[], Awaitable[None]]) -> None:
        self.bulk = bulk
        self.writer = writer
        # Returns once every close answered so far is registered (closes_behind.py):
        # a round covers the closes before it, not only the commits.
        self._registered = registered
        self.interval = interval
        self._rounds: Rounds[None, None, None] = Rounds(self._round, _in_worker_thread)
        self._written_at_last_round = 0

    async def durable(self) -> None:
        """Return after a round that started after this call (what fsync waits for);
        EIO when that round failed, whatever the cause was (the log says it)."""
        await self._registered()
        try:
            await self._rounds.submit(None)
        except OSError as e:
            raise OSError(errno.EIO, f"the durability round failed: {e}") from e

    async def run(self) -> None:
        """Round after round, every `interval` seconds when anything was written."""
        while True:
            await trio.sleep(self.interval)
            if self.writer.writes != self._written_at_last_round:
                try:
                    await self.durable()
                except Exception as e:  # the mount stays up; the next round tries again
                    log.error("a durability round failed (tried again in %gs): %s",
                              self.interval, e)

    def finish(self) -> None:
        """The last round, at unmount (no trio loop then: the writer is idle)."""
        self.bulk.finish(self.writer.catalog)

    def _round(self, _: None, waiting: list[None]) -> list[outcome.Outcome[None]]:
        """On a worker thread: the disk syncs here, the commit on the writer's own
        connection (between two of its registrations)."""
        written = self.writer.writes  # what this round covers at least
        started = self.bulk.sync_blobs()
        trio.from_thread.run(self.writer, lambda catalog: catalog.make_commits_durable())
        self.bulk.mark_durable(started)
        self._written_at_last_round = written + 1  # and its own commit
        log.debug("durability round: everything closed before %.3f is on disk", started)
        return [outcome.Value(None) for _ in waiting]  # one each: read once


async def _in_worker_thread(loop: Callable[[None], None]) -> None:
    await trio.to_thread.run_sync(loop, None)
