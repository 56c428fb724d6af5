"""Garbage collection of blobs no kept record references (law 3).

A blob is garbage when no live record references it, no closed record younger
than its retention window does (`keep_history`, or the first matching rule of the
config), no variant does, and it was first seen longer ago than `grace` (ingests
in flight). Preview lists each with the record that last used it; apply deletes in
batches, each inside a catalog write transaction that checks the blob is still
garbage, so a registration racing with it either is seen or sees the blob gone and
restores it (see `SqliteCatalog._require_present`). Deleted blobs keep their row
as a tombstone (state 'deleted') for the history that still names them.

An object store also collects orphans: objects uploaded but never registered (a
writer died between the upload and the commit). gc lists the bucket first, whole,
before it deletes anything: a listing that fails stops gc with nothing deleted,
because a failed listing taken for an empty one (or a partial one for a whole one)
is how a collector loses live data. An orphan older than `grace` is deleted under
the same per-blob lock, after checking that no registration recorded it meanwhile.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from casfs.errors import CatalogBusy
from casfs.fsck import objects_beside_ledger
from casfs.records import GcPolicy, LastUse
from casfs.store import Store

BATCH = 500


@dataclass(frozen=True)
class Garbage:
    sha256: str
    bytes: int
    first_seen: float
    last_path: str | None  # where the record that last used it was
    last_used: float | None  # when that record was closed
    orphan: bool = False  # an object with no catalog row (first_seen: its upload)

    def as_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes, "first_seen": self.first_seen,
                "last_path": self.last_path, "last_used": self.last_used,
                "orphan": self.orphan}


@dataclass
class GcReport:
    apply: bool
    blobs: int = 0
    bytes: int = 0
    removed: int = 0
    removed_bytes: int = 0
    garbage: list[Garbage] = field(default_factory=list)


def find_garbage(store: Store, policy: GcPolicy, now: float | None = None
                 ) -> Iterator[list[Garbage]]:
    """The garbage in pages of BATCH blobs; no catalog read is open between pages."""
    now = now or time.time()
    after = ""
    places: dict[tuple[str, str], str] = {}  # artifact -> its directory path, asked once
    while page := store.catalog.garbage_blobs(policy, now, after, BATCH):
        yield [_garbage(store, places, *row) for row in page]
        after = page[-1][0]


def find_orphans(store: Store, grace: float, now: float | None = None) -> list[Garbage]:
    """Objects of an object store with no catalog row, older than `grace`, from a
    whole listing: OSError when the listing fails, whatever it had listed."""
    now = now or time.time()
    return [Garbage(sha, size, modified, None, None, orphan=True)
            for sha, size, modified, recorded in objects_beside_ledger(store)
            if recorded is None and now - modified > grace]


def collect(store: Store, policy: GcPolicy, *, apply: bool,
            on_blob: Callable[[Garbage], None] | None = None) -> GcReport:
    """Preview (apply=False) or delete the garbage; resumable: a rerun goes on. The
    orphans of an object store are listed before anything is deleted."""
    report = GcReport(apply=apply)
    orphans = find_orphans(store, policy.grace)
    orphan_pages = (orphans[start:start + BATCH] for start in range(0, len(orphans), BATCH))
    for page in itertools.chain(find_garbage(store, policy, time.time()), orphan_pages):
        for garbage in page:
            report.blobs += 1
            report.bytes += garbage.bytes
            if on_blob:
                on_blob(garbage)
        if apply:
            try:
                _delete(store, policy, page, report)
            except CatalogBusy as e:
                raise CatalogBusy(
                    f"{e}. gc deleted {report.removed} blob(s) before that; run it again "
                    "to go on (it resumes), at a quieter time if this repeats") from None
    return report


def _delete(store: Store, policy: GcPolicy, batch: list[Garbage], report: GcReport) -> None:
    """Delete a batch inside one write transaction, re-checking each blob there under
    its lock: garbage must still be garbage; an orphan must still have no row (else a
    registration that had uploaded it committed meanwhile), a tombstone being none."""
    removed = removed_bytes = 0
    with store.catalog.write_transaction():
        now = time.time()
        for garbage in batch:
            if not store.catalog.lock_blob_for_removal(garbage.sha256) or \
                    not _still_deletable(store, policy, garbage, now):
                continue  # being registered, or recorded again since the scan
            if not garbage.orphan:
                store.catalog.set_blob_state(garbage.sha256, "deleted")
            store.blobs.delete(garbage.sha256)
            removed += 1
            removed_bytes += garbage.bytes
        store.catalog.bump_counter("casfs_gc_removed_total", removed)
        store.catalog.bump_counter("casfs_gc_removed_bytes_total", removed_bytes)
    report.removed += removed
    report.removed_bytes += removed_bytes


def _still_deletable(store: Store, policy: GcPolicy, garbage: Garbage, now: float) -> bool:
    if garbage.orphan:
        return store.catalog.blob_state(garbage.sha256) in ("absent", "deleted")
    return store.catalog.is_garbage(garbage.sha256, policy, now)


def _garbage(store: Store, places: dict[tuple[str, str], str], sha256: str, size: int,
             first_seen: float, last: LastUse | None) -> Garbage:
    if last is None:
        return Garbage(sha256, size, first_seen, None, None)
    key = (last.resolver, last.artifact_id)
    if key not in places:
        places[key] = store.catalog.path_at(*key, "").rstrip("/")
    return Garbage(sha256, size, first_seen, f"{places[key]}/{last.basename}", last.valid_to)
