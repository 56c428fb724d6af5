"""The blob store interface: where the bytes live, named by their SHA-256.

`open_blobs(url)` opens one: `file:///PATH` (a directory on a local or shared disk,
`local.py`) or `s3://BUCKET/PREFIX` (an S3-compatible object store with a read
cache on each host, `s3.py` and `cache.py`). Every store stages on a local filesystem
first (`staging.py`), so hashing and law 1 are the same for all of them.
tests/test_blob_store_contract.py runs the same suite on each.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit

from casfs.blobs.arrival import Arrival
from casfs.blobs.cache import ReadCache
from casfs.blobs.staging import StagingFile
from casfs.errors import StoreError


@dataclass(frozen=True)
class Hashed:
    """What re-reading a blob found (verify)."""

    sha256: str  # the blob's name
    actual: str | None  # the SHA-256 of its bytes; None when it is missing
    size: int
    version: str | None  # which object was read: quarantine acts only on that one


class BlobStore(Protocol):
    """The contract every blob store keeps (law 1): the blob named X holds exactly
    the bytes whose SHA-256 is X, or does not exist; blobs are never modified. Its
    methods are called from worker threads, one store object by several at once."""

    local: bool
    """True when its bytes are on a filesystem here (opening one costs no round trip)."""

    @property
    def cache(self) -> ReadCache | None:
        """This host's copies of blobs it read or wrote (`casfs verify --cache`
        re-hashes them); None when the blobs are read where they are."""
        ...

    def stage(self) -> StagingFile:
        """A new, empty staging file on a local filesystem."""
        ...

    def place(self, staging: StagingFile, *, durable: bool = True) -> tuple[str, int, bool]:
        """Finish `staging` (hash, fsync) and make it the blob of its hash, durably.
        Returns (sha256, size, is_new); is_new is False when the blob existed already
        (a dedup hit; its bytes are not replaced, and are durable when this returns,
        too). The staging file stays open: the caller discards it once the record is
        committed. `durable=False` (a bulk load) may return before the bytes and the
        name are on disk: `sync` makes every blob placed so far durable."""
        ...

    def sync(self) -> None:
        """Make every blob placed so far durable (after `place(durable=False)`)."""
        ...

    def place_batch(self, stagings: list[StagingFile], *, durable: bool = True,
                    patient: bool = True, link_first: bool = False
                    ) -> list[tuple[str, int, bool]]:
        """`place` for each of `stagings`, with the same results in the same order,
        as cheaply as the store allows (a local store may sync them all at once).
        Not `patient` (a round of closes): without waiting for anything but these
        files, where the store can tell. An error stops the batch and is raised;
        files placed before it stay placed, and placing them again is a dedup hit.

        `link_first` (a durable mount's round, which keeps a crash marker:
        casfs.link_first) lets a store that names blobs on a disk link them before
        the one sync that takes bytes and names there together. Everything is
        durable when it returns, as without it; but until then a name may reach
        the disk before its bytes, which only recovery after a crash of the machine
        may find (law 1). A store without such names ignores it."""
        ...

    def restore(self, staging: StagingFile, sha256: str) -> None:
        """Put a placed blob back from its still-open staging file after gc or a
        quarantine removed it before its registration committed."""
        ...

    def has(self, sha256: str) -> bool:
        """Whether the blob exists now (asked inside a registration's transaction)."""
        ...

    def open_blob(self, sha256: str) -> int:
        """A read-only file descriptor on the blob's bytes, which stays readable
        until closed even if the blob is deleted meanwhile. FileNotFoundError when
        the blob does not exist."""
        ...

    def open_blob_early(self, sha256: str, size: int) -> tuple[int, Arrival | None]:
        """`open_blob` for a reader that need not wait for all `size` bytes: with an
        `Arrival` while they are still coming (a large blob filling a host's cache),
        and then a range may be read only after `Arrival.wait_for` its end; None
        when every byte is readable now."""
        ...

    def uri(self, sha256: str) -> str:
        """The blob's `storage_uri` in the catalog."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove a blob (gc, inside a catalog write transaction that locked it); a
        blob that is gone already is no error."""
        ...

    def hash_blob(self, sha256: str) -> Hashed:
        """Read the blob's bytes from the store itself (no cache) and hash them."""
        ...

    def quarantine(self, sha256: str, seen: Hashed) -> str | None:
        """Move a bad blob aside if it is still the object `seen` describes; where it
        went, or None when it was gone or replaced meanwhile."""
        ...


@runtime_checkable
class Listing(Protocol):
    """A blob store that can list what it holds (fsck compares that with the ledger)."""

    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        """(sha256, size, last modified) of every blob, in hash order; an OSError on any
        listing error (a failed listing is never an empty one)."""
        ...


def file_url(path: Path) -> str:
    return "file://" + quote(str(path.absolute()))


def open_blobs(url: str, store_root: Path) -> BlobStore:
    """The blob store at `url`. file:///PATH is a directory with cas/, tmp/ and
    quarantine/ (the store directory itself by default). A directory that several
    hosts share gets one staging directory per host, tmp/<host>/, so that no host
    cleans up another's staging files."""
    from casfs.blobs.local import LocalBlobStore

    parts = urlsplit(url)
    if parts.scheme == "s3":
        from casfs.blobs.s3 import from_url
        return from_url(parts.netloc, unquote(parts.path), store_root)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise StoreError(f"unknown blob store URL {url!r}: use file:///PATH or "
                         "s3://BUCKET/PREFIX")
    root = Path(unquote(parts.path))
    tmp = root / "tmp"
    if root != store_root:
        tmp = tmp / socket.gethostname()
        for sub in ("cas/sha256", "quarantine"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
    return LocalBlobStore(root / "cas", tmp, quarantine_dir=root / "quarantine")
