"""Bulk loads: closes that return before they are registered, made durable in rounds.

A mount asked for `-o durability=batch` gives up law 6's "durable on close" for
throughput: a close returns at once, and its file is registered right after it (the
mount's closes_behind.py), its blob placed without an fsync and its record committed
without waiting for the disk. Every few seconds (and on fsync, and at unmount) a durability
round syncs the blobs' filesystem (`BlobStore.sync`) and then the catalog
(`Catalog.make_commits_durable`), and only then writes down the moment the round
started in the mount's marker, `run/bulk-load-<pid>.json`. So a marker says:
everything placed and committed before `durable_until` is on disk.

A crash (of the machine; a killed daemon loses only the closes whose registration
was under way, and nothing the kernel holds) may lose what came after: records,
which is fine (their blobs become garbage for gc), and blobs, which is not while a
record points to them, or while a blob file holds wrong bytes (law 1). A marker
whose process is gone means such a crash may have happened: `recover` hashes every
blob linked into place since its `durable_until` (a link sets the file's ctime),
moves aside those whose bytes do not match their name, and closes the records that
used them, as fsck does for a missing blob; so it does for a record since then whose
blob file is gone altogether (its name lost, its record kept: the disk keeps no
order). The next mount of the store runs it, and so does `casfs fsck --repair
--apply`.

Only for a store whose catalog and blobs are on this machine: on shared storage,
another host's blobs still arriving would look lost to this one's recovery.

A durable mount keeps a marker of the same kind, `run/link-first-<pid>.json`, for
the same reason: its rounds link blobs before the one sync that takes their bytes
and names to disk (casfs.link_first). Its commits wait for that sync, so no record
of it can point to a lost blob; but a crash of the machine may leave a name on
bytes that never arrived, which the next use of the store must not take for a
dedup hit. Such a marker needs recovery only when the machine went down with its
mount (another boot): a mount that died alone left every byte it linked with the
kernel.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from casfs.blobs.local import LocalBlobStore
from casfs.catalog import Catalog
from casfs.errors import CasfsError
from casfs.processes import pid_alive
from casfs.store import Store, StoreLayout

log = logging.getLogger("casfs.bulk_load")

MARGIN_S = 2.0  # recovery looks this much before `durable_until` (coarse clocks)
LOST = "lost in a crash before its durability round"
BULK_LOAD = "bulk-load-"  # the names of markers: a bulk load's,
LINK_FIRST = "link-first-"  # and a durable mount's (casfs.link_first)


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass
class Marker:
    """A bulk-loading mount's record of how far its closes are durable."""

    path: Path
    pid: int
    boot: str
    durable_until: float

    @property
    def owner_gone(self) -> bool:
        """The mount that wrote it is not running (a pid after a reboot is someone
        else's)."""
        return self.pid <= 0 or self.boot != boot_id() or not pid_alive(self.pid)

    @property
    def link_first(self) -> bool:
        """A durable mount's marker, rather than a bulk load's."""
        return self.path.name.startswith(LINK_FIRST)

    @property
    def needs_recovery(self) -> bool:
        """Its mount ended in a crash that may have lost bytes: a bulk load's in any
        crash, a durable mount's only in one of its machine (see the module)."""
        if not self.owner_gone:
            return False
        return not self.link_first or self.pid <= 0 or not self.boot or \
            self.boot != boot_id()

    @classmethod
    def begin(cls, layout: StoreLayout, prefix: str) -> Marker:
        """This process's marker (`prefix`: BULK_LOAD or LINK_FIRST), durable until
        now, written before anything relies on it."""
        layout.run.mkdir(parents=True, exist_ok=True)
        marker = cls(layout.run / f"{prefix}{os.getpid()}.json", os.getpid(), boot_id(),
                     time.time())
        marker.save()
        return marker

    def save(self) -> None:
        """Write it whole and durably (a new file, synced, renamed over the old)."""
        partial = self.path.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, json.dumps({"pid": self.pid, "boot": self.boot,
                                     "durable_until": self.durable_until}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def markers(layout: StoreLayout) -> list[Marker]:
    """Every marker of the store (bulk loads' and durable mounts'), running or not."""
    found = []
    paths = [*layout.run.glob(f"{BULK_LOAD}*.json"), *layout.run.glob(f"{LINK_FIRST}*.json")]
    for path in sorted(paths):
        try:
            data = json.loads(path.read_text())
            found.append(Marker(path, int(data["pid"]), str(data["boot"]),
                                float(data["durable_until"])))
        except (OSError, ValueError, KeyError, TypeError):
            # It is renamed into place whole, so this is damage from elsewhere: take
            # it as a crashed load with nothing durable (recovery checks every blob).
            found.append(Marker(path, 0, "", 0.0))
    return found


def unfinished(layout: StoreLayout) -> list[Marker]:
    """Markers of mounts that ended in a crash that may have lost bytes."""
    return [m for m in markers(layout) if m.needs_recovery]


def drop_stale(store: Store) -> int:
    """Remove the markers of durable mounts that died while their machine ran on:
    the kernel kept what they linked, and a sync takes it to disk before the marker
    that would have had it checked is gone. Returns how many."""
    stale = [m for m in markers(store.layout)
             if m.link_first and m.owner_gone and not m.needs_recovery]
    if stale:
        store.blobs.sync()
    for marker in stale:
        marker.path.unlink(missing_ok=True)
    return len(stale)


def local_blobs(store: Store) -> LocalBlobStore | None:
    """The store's blob directory, when its catalog and blobs are on this machine."""
    if not store.catalog.local or not store.blobs.local or \
            not isinstance(store.blobs, LocalBlobStore):
        return None
    return store.blobs


def require_local(store: Store) -> LocalBlobStore:
    """The store's blob directory, or a CasfsError saying why a bulk load cannot run."""
    blobs = local_blobs(store)
    if blobs is None:
        raise CasfsError("-o durability=batch needs a store whose catalog and blobs are "
                         "on this machine (an embedded catalog and a blob directory); "
                         "on shared storage, mount with the default durability=close")
    return blobs


class BulkLoad:
    """The durability rounds of one bulk-loading mount, one at a time. A round is
    `sync_blobs`, then the catalog's `make_commits_durable` on the connection the
    closes commit on (the mount runs it on that connection's thread), then
    `mark_durable`; `make_durable` does all three."""

    def __init__(self, store: Store) -> None:
        self.blobs = require_local(store)
        self.marker = Marker.begin(store.layout, BULK_LOAD)  # before any close relies on it

    def sync_blobs(self) -> float:
        """Make every blob placed so far durable; returns when the round started."""
        started = time.time()
        self.blobs.sync()
        return started

    def mark_durable(self, started: float) -> None:
        """Everything placed and committed before `started` is on disk now."""
        self.marker.durable_until = started
        self.marker.save()

    def make_durable(self, catalog: Catalog) -> float:
        started = self.sync_blobs()
        catalog.make_commits_durable()
        self.mark_durable(started)
        return started

    def finish(self, catalog: Catalog) -> None:
        """The last round (unmount): nothing is left to recover."""
        self.make_durable(catalog)
        self.marker.path.unlink(missing_ok=True)


@dataclass
class Recovery:
    checked: int = 0
    lost: list[str] = field(default_factory=list)  # blobs moved aside, records closed


def recover(store: Store, marker: Marker) -> Recovery:
    """Check what a crashed bulk load may not have made durable; see the module."""
    blobs = require_local(store)
    report = Recovery()
    for sha256 in list(blobs.placed_since(marker.durable_until - MARGIN_S)):
        report.checked += 1
        hashed = blobs.hash_blob(sha256)
        if hashed.actual in (sha256, None):  # right, or removed meanwhile (gc)
            continue
        with store.catalog.write_transaction():
            moved = store.catalog.lock_blob_for_removal(sha256) and \
                blobs.quarantine(sha256, hashed) is not None
            store.catalog.set_blob_state(sha256, "quarantined" if moved else "missing")
            store.catalog.close_records_of_blob(sha256, LOST)
        report.lost.append(sha256)
        log.warning("blob %s was lost in a crash before its durability round (%s): "
                    "moved aside, its records closed", sha256,
                    "empty" if hashed.size == 0 else f"{hashed.size} bytes, wrong hash")
    since = marker.durable_until - MARGIN_S
    for sha256 in store.catalog.blobs_registered_since(since):
        if not blobs.has(sha256) and _close_if_missing(store, blobs, sha256):
            report.lost.append(sha256)
            log.warning("blob %s was lost in a crash before its durability round (its "
                        "file is gone): its records closed", sha256)
    blobs.sync()  # what was checked is now durable too
    marker.path.unlink(missing_ok=True)
    return report


def _close_if_missing(store: Store, blobs: LocalBlobStore, sha256: str) -> bool:
    """Close the records of a blob whose file a crash lost (its name never reached the
    disk, its record did); re-checked where gc, which removes files inside such a
    transaction, cannot be halfway."""
    with store.catalog.write_transaction():
        if store.catalog.blob_state(sha256) != "present" or blobs.has(sha256):
            return False
        store.catalog.set_blob_state(sha256, "missing")
        store.catalog.close_records_of_blob(sha256, LOST)
    return True


def recover_all(store: Store) -> list[tuple[Marker, Recovery]]:
    """`recover` every mount of the store that a crash ended (what a mount, and a
    command that writes, does first), and drop the markers that need no recovery."""
    reports = []
    for marker in unfinished(store.layout):
        report = recover(store, marker)
        log.info("recovered %s (pid %d): %d blob(s) checked, %d lost", describe(marker),
                 marker.pid, report.checked, len(report.lost))
        reports.append((marker, report))
    if drop_stale(store):
        log.info("a durable mount of this store had died: what it linked is synced now")
    return reports


def describe(marker: Marker) -> str:
    """What the crash of `marker`'s mount was, for messages."""
    if marker.link_first:
        return "a mount whose machine went down"
    return "a bulk load that ended without its last round"

