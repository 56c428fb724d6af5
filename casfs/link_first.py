"""A durable mount's rounds: one sync takes a round's bytes and names to disk.

A round of closes on a local store waited for three syncs in turn before it
answered: its staged bytes (a syncfs), then, once they were linked into `cas/`,
the new names (a second syncfs), then its commit (SQLite's fsync of its log). That
order kept law 1 through a crash of the machine without any recovery. A mount now
links first and syncs once, bytes and names together
(`BlobStore.place_batch(link_first=True)`), and only then commits: a close still
returns only when its bytes, its name and its record are durable (law 6), no
record is ever committed on bytes that are not on disk (law 2), and a sync that
fails leaves nothing registered.

What the order bought is left to recovery. A machine that goes down between a
round's links and its sync may come back with a name in `cas/` on empty or wrong
bytes; no record uses it, but the next close of the same bytes would take it for a
dedup hit. So a mount that links first keeps a marker (`run/link-first-<pid>.json`,
casfs.bulk_load's kind) saying since when its links may not be on disk; after such
a crash the next mount, or command that writes, hashes every blob linked since then
and moves the wrong ones aside before anything else (`bulk_load.recover`). A mount
that dies alone needs none of it: the kernel keeps what it linked.

Committing before the one sync as well (bytes, names and commit in one syncfs) was
built and measured, and taken out: a record would then be visible, and after a
crash of the machine durable, before its bytes, which a read-only mount (it does
not recover) could serve, and a failed sync would leave a registered file whose
close failed (laws 2 and 6). README, "Linking first", has both measured.

The marker is written when the mount starts and moved forward every few seconds
(`advance`, off the event loop): keeping it exact would cost a sync a round, the
very thing saved. A round whose placing failed after its links stops it moving, and
the marker then stays at unmount, so the next mount checks everything since. Only
for stores whose catalog and blobs are on this machine (as a bulk load).
"""

from __future__ import annotations

import logging

from casfs.blobs.local import LocalBlobStore
from casfs.bulk_load import LINK_FIRST, Marker
from casfs.store import Store

log = logging.getLogger("casfs.link_first")
ADVANCE_S = 5.0  # how often a mount moves its marker forward (`advance`)


class LinkFirst:
    """The marker of one durable mount whose rounds link before they sync."""

    def __init__(self, store: Store, blobs: LocalBlobStore) -> None:
        """`blobs`: the store's, on this machine (`bulk_load.local_blobs`)."""
        self.blobs = blobs
        self.marker = Marker.begin(store.layout, LINK_FIRST)  # before anything is linked
        self._synced_until = self.marker.durable_until
        self.stuck = False  # a round's placing failed: the marker moves no more

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
