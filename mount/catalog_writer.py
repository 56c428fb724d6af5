"""Every catalog write of a mount, on worker threads with connections of their own.

A write transaction ends with a commit that waits for the disk (SQLite's WAL fsync)
or for a server; on the trio thread that would stall every request of the mount.
Writes run in worker threads instead. SQLite takes one writer at a time anyway, so
an embedded catalog gets one thread and one connection (a limiter of one keeps the
writes in the order they were asked for); a server that takes writers in parallel
(PostgreSQL) gets a pool of them, so that files closed at once by several writers
commit at once. Each handler awaits its write before it answers the kernel, so what
one request causes is committed before anything that follows it. Inode numbers for
new files come from blocks reserved through the writer, the next one while half of
the current one is left, so that a create does not wait for the writer: rounds
back to back hold it for up to 50 ms (rounds.py), and in a bulk load, whose rounds
wait to gather closes, a create waited that long once per block (10-17 ms, 6 times
in a `cp` of 5,000 files, counted with the kernel's `fuse` trace events). What each
job committed is handed to `on_commit`, so that the mount drops what it cached of
those places.

Registrations of closed files go in rounds (group commit, see rounds.py): those
that arrive while one round commits share the next round's transaction, made by
`Catalog.write_at_paths` in a few statements whatever the round's size, and the
writer's thread goes on with the next round while closes wait. If any of them
fails, the round registers each on its own, so each close gets its own answer.
On local blobs a round first places its blobs together (`place_blobs`); on a
durable mount it links them and then syncs bytes and names at once, one syncfs for
the lot while little else waits to be written back (casfs.link_first). One round
at a time, on PostgreSQL too: 2 or 4 at once on its pool were slower with 8 writers
(349-362 and 281-318 files/s against 356-398 with one, in one session).

On a catalog server, a round's statement does not wait for its blobs' syncs: a
helper thread places them while the statement goes to the server, and the round
checks that they are in place (under the blobs' locks, as always) before it
commits; nothing is committed before its bytes are durable (law 6). Whether a blob
was a dedup hit, which the statement counts, is read before the placing; if the
placing found otherwise (another host placed or removed it meanwhile), or anything
else fails, the transaction is rolled back and the round is registered as before,
from what the placing did. Measured in README, "SQLite vs PostgreSQL catalogs".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import outcome
import trio

from casfs.blobs import BlobStore
from casfs.blobs.staging import StagingFile
from casfs.catalog import Catalog
from casfs.catalog.changes import Change
from casfs.errors import CatalogUnavailable
from casfs.ingest import StoredBlob, place_blobs, register_placed
from casfs.link_first import LinkFirst
from casfs.records import Document, PathWrite
from casfs.store import Store

from .catalog_pool import CatalogPool
from .rounds import Rounds

T = TypeVar("T")
REMOTE_WRITERS = 8
RESERVE_AHEAD_BELOW = 128  # inode numbers left when the next block is reserved
log = logging.getLogger("casfs.mount")


@dataclass(frozen=True)
class ToPlace:
    """A close whose blob its round places (on local blobs, on the round's thread,
    with the others of the round: see `place_blobs`), and how to make its write of
    the placed blob."""

    write_of: Callable[[StoredBlob], PathWrite]
    durable: bool  # False in a bulk load: the durability round syncs it later


# A closed file's write, or its blob still to place; and its bytes until committed.
Registration = tuple[PathWrite | ToPlace, StagingFile]


class _NotAsExpected(Exception):
    """The placing of a round's blobs did not do what its statement assumed."""


class CatalogWriter:
    def __init__(self, store: Store) -> None:
        self.catalog = store.open_catalog()  # the first connection; more on demand
        size = 1 if self.catalog.local else REMOTE_WRITERS
        self._pool = CatalogPool(store, size, first=self.catalog)
        self._inos = range(0)  # inode numbers for new files, in use
        self._next_inos = range(0)  # the block reserved ahead
        self._reserving = False  # a reservation ahead is under way
        self.on_commit: Callable[[list[Change] | None], None] = lambda changes: None
        self._blobs = store.blobs
        # Places a round's blobs while its statement is at the catalog server.
        self._placer = None if self.catalog.local or not self._blobs.local else \
            ThreadPoolExecutor(1, thread_name_prefix="casfs-place")
        self.rounds: Rounds[Catalog, Registration, Document] = Rounds(
            self._register_round, self.__call__)
        self.writes = 0  # jobs and registrations asked for so far
        # Set on a durable mount of a local store: its rounds link, then sync once.
        self.link_first: LinkFirst | None = None

    @property
    def senders(self) -> set[str]:
        """Who this mount's writes are, in the catalog's announcements of them."""
        return {sender for c in self._pool.connections
                if (sender := getattr(c, "sender", None))}

    async def __call__(self, change: Callable[[Catalog], T]) -> T:
        """Run `change(catalog)` on a writer thread with a connection of its own."""
        self.writes += 1
        def job(catalog: Catalog) -> T:
            try:
                return change(catalog)
            finally:
                self._hand_on_commits(catalog)
        return await self._pool.run(job)

    def _hand_on_commits(self, catalog: Catalog) -> None:
        """On the writer's thread: what `catalog` committed since the last call, to
        `on_commit`."""
        committed = catalog.drain_changes()
        if committed != []:
            self.on_commit(committed)

    async def register(self, write: PathWrite | ToPlace, staging: StagingFile) -> Document:
        """Register a closed file in the next round: one transaction with the
        registrations that arrive while the one before it runs. `write` is the
        write of a placed blob, or its blob still to place (the round places its
        blobs together before it commits: see the module's docstring). `staging`
        holds its bytes, to put the blob back if gc took it."""
        self.writes += 1
        return await self.rounds.submit((write, staging))

    def _register_round(self, catalog: Catalog, registrations: list[Registration]
                        ) -> list[outcome.Outcome[Document]]:
        """One round, on the writer's thread: place the blobs still to place, register
        every write in one transaction, and hand on what it committed before the
        round's closes are answered."""
        answers: list[outcome.Outcome[Document] | None] = [None] * len(registrations)
        writes = {k: write for k, (write, _) in enumerate(registrations)
                  if isinstance(write, PathWrite)}
        to_place = [(k, write) for k, (write, _) in enumerate(registrations)
                    if isinstance(write, ToPlace)]
        if to_place:
            stagings = [registrations[k][1] for k, _ in to_place]
            durable = any(write.durable for _, write in to_place)
            if self._placer is not None:
                expected = self._expected(stagings)  # read before the placing begins
                placing = self._placer.submit(place_blobs, self._blobs, stagings,
                                              durable=durable)
                if expected is not None:
                    registered = self._register_beside(catalog, registrations, writes,
                                                       to_place, expected, placing)
                    if registered is not None:
                        return registered
                placed = placing.result()
            elif self.link_first is not None and durable:
                placed = self._place_linked_first(stagings, self.link_first)
            else:
                placed = place_blobs(self._blobs, stagings, durable=durable)
            for (k, write), blob in zip(to_place, placed, strict=True):
                made = outcome.Error(blob) if isinstance(blob, OSError) \
                    else outcome.capture(write.write_of, blob)
                if isinstance(made, outcome.Value):
                    writes[k] = made.value
                else:
                    answers[k] = made
        ready = sorted(writes)
        try:
            registered = register_together(catalog, self._blobs, [
                (writes[k], registrations[k][1]) for k in ready])
        finally:
            self._hand_on_commits(catalog)
        for k, answer in zip(ready, registered, strict=True):
            answers[k] = answer
        return [answer for answer in answers if answer is not None]  # every one

    def _place_linked_first(self, stagings: list[StagingFile], link_first: LinkFirst
                            ) -> list[StoredBlob | OSError]:
        """A durable round's blobs on a store of this machine (casfs.link_first):
        linked, then synced at once, bytes and names, before the round commits."""
        started = time.time()
        placed = place_blobs(self._blobs, stagings, link_first=True)
        # A blob that failed before its link left nothing unsynced behind; one that
        # failed after it (its sync) may have.
        link_first.placed(started, ok=not any(
            isinstance(blob, OSError) and staging.linked
            for blob, staging in zip(placed, stagings, strict=True)))
        return placed

    def _expected(self, stagings: list[StagingFile]) -> list[StoredBlob] | None:
        """What placing `stagings` will find, asked before it begins: each blob's hash,
        and whether the store has it already (a dedup hit, which a round counts).
        None when a staging file cannot be read (its placing will say why)."""
        expected: list[StoredBlob] = []
        try:
            for staging in stagings:
                sha256 = staging.digest()
                seen = any(blob.sha256 == sha256 for blob in expected)
                expected.append(StoredBlob(sha256, staging.size, self._blobs.uri(sha256),
                                           dedup_hit=seen or self._blobs.has(sha256)))
        except OSError:
            return None
        return expected

    def _register_beside(self, catalog: Catalog, registrations: list[Registration],
                         writes: dict[int, PathWrite], to_place: list[tuple[int, ToPlace]],
                         expected: list[StoredBlob],
                         placing: Future[list[StoredBlob | OSError]]
                         ) -> list[outcome.Outcome[Document]] | None:
        """The round in one transaction whose statement runs while `placing` places
        (and syncs) its blobs, as `expected`; it commits only once they are placed
        so. None, with nothing committed, when anything went otherwise: the caller
        then registers the round as usual, from what the placing did."""
        try:
            beside = writes | {k: write.write_of(blob)
                               for (k, write), blob in zip(to_place, expected, strict=True)}
        except Exception:  # the usual way gives that close its own answer
            return None

        def present(sha256: str) -> bool:
            """Asked under the blobs' locks, after the statement: the placing must have
            done what the statement counted."""
            if placing.result() != expected:  # an OSError, or a dedup hit otherwise
                raise _NotAsExpected("a blob was placed otherwise than expected")
            return self._blobs.has(sha256)

        round_ = [beside[k] for k in range(len(registrations))]  # every one, in order
        staged = {write.new.sha256: staging for write, (_, staging)
                  in zip(round_, registrations, strict=True)}
        try:
            documents = register_placed(self._blobs, staged, lambda _: catalog.write_at_paths(
                round_, present))
        except Exception as e:  # rolled back
            log.debug("a round of %d is registered again after its placing: %s",
                      len(round_), e)
            return None
        finally:
            self._hand_on_commits(catalog)
        return [outcome.Value(document) for document in documents]

    async def new_ino(self) -> int:
        """An inode number for a new file, never handed out before."""
        if not self._inos:
            self._inos, self._next_inos = self._next_inos, range(0)
        if not self._inos:  # none reserved ahead (yet): wait for a block
            self._inos = await self(lambda catalog: catalog.reserve_inos())
        ino = self._inos.start
        self._inos = self._inos[1:]
        if len(self._inos) < RESERVE_AHEAD_BELOW and not self._next_inos and \
                not self._reserving:
            self._reserving = True
            trio.lowlevel.spawn_system_task(self._reserve_ahead)
        return ino

    async def _reserve_ahead(self) -> None:
        try:
            self._next_inos = await self(lambda catalog: catalog.reserve_inos())
        except Exception as e:  # a system task must not raise; a create asks itself
            log.warning("reserving inode numbers ahead failed: %s", e)
        finally:
            self._reserving = False

    def close(self) -> None:
        if self._placer is not None:
            self._placer.shutdown()
        self._pool.close()


def register_together(catalog: Catalog, blobs: BlobStore,
                      registrations: list[tuple[PathWrite, StagingFile]]
                      ) -> list[outcome.Outcome[Document]]:
    """Every registration in one transaction; when that fails, each in its own, for
    its own answer (the failure was one registration's, or the transaction's). When
    the catalog server could not be reached, every one fails at once with that."""
    def register(some: list[tuple[PathWrite, StagingFile]]) -> list[Document]:
        placed = {write.new.sha256: staging for write, staging in some}
        return register_placed(blobs, placed, lambda present: catalog.write_at_paths(
            [write for write, _ in some], present))

    if len(registrations) > 1:
        try:
            return [outcome.Value(d) for d in register(registrations)]
        except CatalogUnavailable as e:  # the server's failure, not one registration's:
            # asking again for each would make the last close wait for every attempt
            return [outcome.Error(CatalogUnavailable(str(e))) for _ in registrations]
        except Exception:  # each is registered again below, on its own
            pass
    return [outcome.capture(lambda one: register([one])[0], r) for r in registrations]
