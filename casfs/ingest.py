"""The one ingest path: place staged bytes in the CAS, then register them.

Every way in (a write into the mount, `casfs put`, an import) ends here:

1. `place_blob` finishes a staging file (hash, fsync, read-only) and links it into
   `cas/`, or finds the blob already there (a dedup hit); `place_blobs` does it for
   a batch, syncing once where that is cheaper. It blocks on disk I/O, so the mount
   calls it from a worker thread.
2. `register_placed` registers the record in one catalog transaction, after the
   blob is in place (law 2), checking inside that transaction that the blob is
   still there; if gc or a quarantine removed it meanwhile, the blob is restored
   from the staging file and the registration tried again.
3. The caller discards the staging file.
"""

from __future__ import annotations

import errno
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from casfs import naming
from casfs.blobs import BlobStore
from casfs.blobs.staging import CHUNK, StagingFile
from casfs.catalog import BlobCheck, RegisterOutcome
from casfs.errors import BlobsMissing, CasfsError, InvalidName, UnreadableSource
from casfs.records import Document, NewDocument
from casfs.store import Store

T = TypeVar("T")
RESTORE_ATTEMPTS = 5


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    bytes: int
    storage_uri: str
    dedup_hit: bool


@dataclass(frozen=True)
class IngestResult:
    document: Document
    outcome: RegisterOutcome
    dedup_hit: bool


def place_blob(blobs: BlobStore, staging: StagingFile, *, durable: bool = True) -> StoredBlob:
    """Put a staging file's bytes in place (law 1; see BlobStore.place for
    `durable`). The staging file stays open."""
    sha256, size, is_new = blobs.place(staging, durable=durable)
    return StoredBlob(sha256, size, blobs.uri(sha256), dedup_hit=not is_new)


def place_blobs(blobs: BlobStore, stagings: list[StagingFile], *, durable: bool = True,
                link_first: bool = False) -> list[StoredBlob | OSError]:
    """`place_blob` for each of `stagings`, a round of closes, as one batch
    (`BlobStore.place_batch`, not patient: a close waits for no other program's
    writes; `link_first` as it says). Each gets its own answer: when the batch
    fails, each is placed again on its own, and one that fails then gets its error."""
    try:
        return [StoredBlob(sha256, size, blobs.uri(sha256), dedup_hit=not is_new)
                for sha256, size, is_new in blobs.place_batch(
                    stagings, durable=durable, patient=False, link_first=link_first)]
    except OSError:
        pass  # whose error it was shows below
    answers: list[StoredBlob | OSError] = []
    for staging in stagings:
        try:
            answers.append(place_blob(blobs, staging, durable=durable))
        except OSError as e:
            answers.append(e)
    return answers


def register_placed(blobs: BlobStore, placed: dict[str, StagingFile],
                    register: Callable[[BlobCheck], T]) -> T:
    """Run `register(present)`, a catalog registration of blobs in `placed` (by hash),
    restoring any blob that vanished before the registration's transaction."""
    for _ in range(RESTORE_ATTEMPTS):
        try:
            return register(blobs.has)
        except BlobsMissing as e:
            for sha256 in e.sha256s:
                blobs.restore(placed[sha256], sha256)
    raise CasfsError(f"blobs were removed {RESTORE_ATTEMPTS} times while being registered; "
                     "is a gc with --grace 0 running in a loop?")


def guess_content_type(basename: str) -> str | None:
    return mimetypes.guess_type(basename, strict=False)[0]


def stage_file(blobs: BlobStore, source: Path) -> StagingFile:
    """Copy `source` into a new staging file, hashing while it streams.

    UnreadableSource when `source` cannot be read; OSError when the store cannot take
    the bytes (a full disk, say).
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise UnreadableSource(source, e) from None
    try:
        staging = blobs.stage()
        try:
            offset = 0
            while True:
                try:
                    chunk = os.read(fd, CHUNK)
                except OSError as e:
                    raise UnreadableSource(source, e) from None
                if not chunk:
                    return staging
                staging.write(chunk, offset)
                offset += len(chunk)
        except BaseException:
            staging.discard()
            raise
    finally:
        os.close(fd)


def ingest_file(store: Store, source: Path, *, resolver: str, artifact_id: str,
                source_url: str | None = None, name: str | None = None,
                content_type: str | None = None, run_id: str | None = None,
                created_at: float | None = None) -> IngestResult:
    """Store a local file once and register it as a document (what `casfs put` does)."""
    basename = _choose_basename(source, name, source_url)
    naming.dir_name_for(resolver)  # refuse identifiers the tree cannot show, before any I/O
    naming.dir_name_for(artifact_id)
    try:
        staging = stage_file(store.blobs, source)
    except OSError as e:
        raise CasfsError(f"cannot store {source}: {e.strerror or e}") from None
    try:
        blob = place_blob(store.blobs, staging)
        new = NewDocument(
            resolver=resolver, artifact_id=artifact_id, basename=basename,
            sha256=blob.sha256, bytes=blob.bytes, storage_uri=blob.storage_uri,
            source_url=source_url, content_type=content_type or guess_content_type(basename),
            run_id=run_id, created_at=created_at, dedup_hit=blob.dedup_hit)
        document, outcome = register_placed(
            store.blobs, {blob.sha256: staging},
            lambda present: store.catalog.register(new, present))
    finally:
        staging.discard()
    return IngestResult(document, outcome, blob.dedup_hit)


def _choose_basename(source: Path, name: str | None, source_url: str | None) -> str:
    """--name wins, then the file's own name, then the URL rule of the design notes."""
    if name is not None:
        cleaned = naming.sanitize_basename(name)
        if cleaned is None:
            raise InvalidName(f"cannot use {name!r} as a file name", errno.EINVAL)
        return cleaned
    from_file = naming.sanitize_basename(source.name)
    if from_file:
        return from_file
    if source_url:
        return naming.basename_from_url(source_url)
    return naming.fallback_basename(str(source))
