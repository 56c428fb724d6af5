"""Moving a store's blobs from its local directory into an object store.

Every blob the ledger knows is copied, in parallel, by its hash: one that is in the
bucket already is skipped (so a move that was killed goes on where it stopped, and
blobs another host uploaded are not sent twice). Each local file is hashed before
it is sent: a file whose bytes no longer match its name is never uploaded under
that name (verify quarantines it); and the upload carries the SHA-256 that the
server checks in transit. Only when every blob is in the bucket does the caller
switch the store (store.toml) to it, after the records are pointed at their new
place; until then the store keeps working from its local blobs, which the move
never changes or removes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from casfs.blobs import BlobStore
from casfs.blobs.local import LocalBlobStore
from casfs.blobs.staging import StagingFile
from casfs.errors import CasfsError
from casfs.store import Store

WORKERS = 8
PREFIXES = [f"{i:02x}" for i in range(256)]  # a page of the ledger: one hash fan-out


@dataclass
class MoveReport:
    blobs: int = 0  # in the ledger, not deleted
    bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0  # in the bucket already
    missing: list[str] = field(default_factory=list)  # no local file (fsck's business)
    damaged: list[str] = field(default_factory=list)  # bytes do not match the name
    # The ledger knew these were gone (quarantined or missing): nothing to move.
    known_absent: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.damaged

    def as_json(self) -> dict[str, Any]:
        return {"blobs": self.blobs, "bytes": self.bytes, "copied": self.copied,
                "copied_bytes": self.copied_bytes, "already_there": self.present,
                "missing": self.missing, "damaged": self.damaged,
                "known_absent": self.known_absent}


def ledger_pages(store: Store) -> Iterator[list[tuple[str, int]]]:
    """(sha256, size) of every blob the ledger has not marked deleted, a hash fan-out
    (one query) at a time."""
    for prefix in PREFIXES:
        yield sorted(store.catalog.blob_sizes_with_prefix(prefix).items())


def survey(store: Store, target: BlobStore) -> MoveReport:
    """What a move would do: the ledger's blobs (nothing is written; OSError when
    the bucket does not answer)."""
    report = MoveReport()
    for page in ledger_pages(store):
        report.blobs += len(page)
        report.bytes += sum(size for _, size in page)
    target.has("0" * 64)  # the bucket answers, with these credentials
    return report


def move(store: Store, target: BlobStore, *, workers: int = WORKERS,
         progress: Callable[[MoveReport], None] | None = None) -> MoveReport:
    """Copy every blob of the ledger that the bucket lacks; OSError when the object
    store fails (what was copied stays: a rerun goes on)."""
    source = store.blobs
    if not isinstance(source, LocalBlobStore):
        raise CasfsError(f"the store's blobs are at {store.locations.blobs}, not in a local "
                         "directory: nothing to move")
    report = MoveReport()
    lock = threading.Lock()

    def one(sha: str, size: int) -> None:  # in a worker thread: no catalog here
        outcome = _copy(source, target, sha)
        with lock:
            if outcome == "copied":
                report.copied += 1
                report.copied_bytes += size
            elif outcome == "present":
                report.present += 1
            elif outcome == "missing":
                report.missing.append(sha)
            else:
                report.damaged.append(sha)
            if progress:
                progress(report)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for page in ledger_pages(store):
            report.blobs += len(page)
            report.bytes += sum(size for _, size in page)
            for future in [pool.submit(one, sha, size) for sha, size in page]:
                future.result()  # the first failure stops the move
    for sha in list(report.missing):
        if store.catalog.blob_state(sha) in ("quarantined", "missing"):
            report.missing.remove(sha)
            report.known_absent.append(sha)
    return report


def _copy(source: LocalBlobStore, target: BlobStore, sha: str) -> str:
    if target.has(sha):
        return "present"
    try:
        fd = os.open(source.path(sha), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return "missing"
    try:
        if source.hash_blob(sha).actual != sha:
            return "damaged"
        staging = StagingFile(None, fd)  # the blob file, read through its descriptor
        staging.size = os.fstat(fd).st_size
        target.restore(staging, sha)  # sent with its SHA-256; created only if absent
        return "copied"
    finally:
        os.close(fd)


def storage_uri_base(target: BlobStore) -> str:
    """The part of the target's URIs before "ab/cdef...": where records will point."""
    example = "0" * 64
    uri = target.uri(example)
    suffix = f"{example[:2]}/{example[2:]}"
    assert uri.endswith(suffix)
    return uri[:-len(suffix)]
