"""A durable mount's rounds: one sync takes a round's bytes, names and commit to disk.

A round of closes on a local store used to wait for three syncs in turn: its staged
bytes (a syncfs), then, once they were linked into `cas/`, the new names (a second
syncfs), then its commit (SQLite's fsync of its log). That order kept the laws
through a crash of the machine without any recovery. A mount now links first,
commits without waiting for the disk, and then syncs once (`blobs.sync`, a
syncfs of the filesystem that holds both the blobs and the catalog), and only then
answers its closes: a close still returns only when its bytes, its name and its
record are durable (law 6). Where one syncfs would not cover the catalog (another
filesystem), or would wait for much of other programs' writes, the round links,
syncs its blobs (`place_batch(link_first=True)`) and commits as before.

What the order bought is left to recovery. A machine that goes down before the
sync may come back with a name in `cas/` on empty or wrong bytes (which the next
close of the same bytes would take for a dedup hit), or with the round's record
and not its blob's name. So a mount that links first keeps a marker
(`run/link-first-<pid>.json`, casfs.bulk_load's kind) saying since when its links
and commits may not be on disk; after such a crash the next mount, or command that
writes, hashes every blob linked since then, moves the wrong ones aside and closes
the records of those lost, before anything else (`bulk_load.recover`). A mount that
dies alone needs none of it: the kernel keeps what it wrote.

Between the commit and the sync, other readers of the catalog may see a record
that is not yet durable, as they may see a local file's bytes before its fsync.
If the sync fails, the round's files stay registered and readable, and each close
gets EIO, as a local file stays readable after its fsync failed.

The marker is written when the mount starts and moved forward every few seconds
(`advance`, off the event loop): keeping it exact would cost a sync a round, the
very thing saved. A round whose placing or sync failed stops it moving, and the
marker then stays at unmount, so the next mount checks everything since. Only for
stores whose catalog and blobs are on this machine (as a bulk load). Measured in
README, "One sync a round".
"""

from __future__ import annotations

import logging
import os
import time

from casfs.blobs.local import LocalBlobStore, little_else_to_write, pending_writeback
from casfs.blobs.staging import StagingFile
from casfs.bulk_load import LINK_FIRST, Marker, boot_id
from casfs.store import Store

log = logging.getLogger("casfs.link_first")
ADVANCE_S = 5.0  # how often a mount moves its marker forward (`advance`)


class LinkFirst:
    """The marker of one durable mount whose rounds link before they sync."""

    def __init__(self, store: Store, blobs: LocalBlobStore) -> None:
        """`blobs`: the store's, on this machine (`bulk_load.local_blobs`)."""
        self.blobs = blobs
        store.layout.run.mkdir(parents=True, exist_ok=True)
        self.marker = Marker(store.layout.run / f"{LINK_FIRST}{os.getpid()}.json",
                             os.getpid(), boot_id(), time.time())
        self.marker.save()  # on disk before anything is linked first
        self._synced_until = self.marker.durable_until
        self.stuck = False  # a round's placing failed: the marker moves no more
        # Whether a syncfs of the blobs takes the catalog's commits to disk too.
        self._syncs_catalog = store.catalog.synced_by_syncfs_of(blobs.cas_dir)

    def one_sync(self, stagings: list[StagingFile]) -> bool:
        """Whether a round of `stagings` may commit before its one syncfs: the syncfs
        covers the catalog, and would not wait long for other programs' writes."""
        return self._syncs_catalog and little_else_to_write(
            sum(staging.size for staging in stagings), pending_writeback())

    def placed(self, started: float, ok: bool) -> None:
        """A round that began at `started` placed its blobs, bytes and names synced
        (`ok`), or not; on the round's thread."""
        if not ok:
            if not self.stuck:
                log.warning("a round's blobs may not be on disk: the next mount after a "
                            "crash of this machine checks every blob linked since %.3f",
                            self.marker.durable_until)
            self.stuck = True
        elif not self.stuck:
            self._synced_until = started

    def advance(self) -> None:
        """Write down how far the links are on disk, when that moved (a worker thread)."""
        until = self._synced_until
        if not self.stuck and until > self.marker.durable_until:
            self.marker.durable_until = until
            self.marker.save()

    def finish(self) -> None:
        """At unmount: with every link on disk, nothing is left to check."""
        if self.stuck:
            log.warning("kept %s: a round's blobs may not be on disk", self.marker.path)
            return
        self.blobs.sync()
        self.marker.path.unlink(missing_ok=True)
