"""The blob store's laws, one suite for every backend (the `blobs` fixture): placing
by hash, dedup, reading, deleting, restoring, re-hashing from the store itself, and
quarantining only the object that was hashed. What only the local directory has
(file modes, O_TMPFILE staging) is in test_blobstore.py."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest

from casfs.blobs import BlobStore, file_url, open_blobs
from casfs.blobs.local import LocalBlobStore
from casfs.blobs.s3 import S3BlobStore


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "s3":
        request.getfixturevalue("s3_env")
        yield open_blobs(f"s3://casfs/{uuid.uuid4().hex}", tmp_path / "store")
        return
    yield open_blobs(file_url(tmp_path / "blobs"), tmp_path / "store")


def put(blobs: BlobStore, data: bytes) -> tuple[str, int, bool]:
    staging = blobs.stage()
    try:
        staging.write(data, 0)
        return blobs.place(staging)
    finally:
        staging.discard()


def read(blobs: BlobStore, sha256: str) -> bytes:
    fd = blobs.open_blob(sha256)
    try:
        out, offset = bytearray(), 0
        while chunk := os.pread(fd, 1 << 20, offset):
            out += chunk
            offset += len(chunk)
        return bytes(out)
    finally:
        os.close(fd)


def test_a_blob_is_named_by_its_hash_and_reads_back(blobs: BlobStore) -> None:
    data = os.urandom(3 << 20)
    sha, size, new = put(blobs, data)
    assert sha == hashlib.sha256(data).hexdigest() and size == len(data) and new
    assert blobs.has(sha)
    assert read(blobs, sha) == data
    assert blobs.uri(sha).endswith(f"/sha256/{sha[:2]}/{sha[2:]}")


def test_the_same_bytes_twice_is_one_blob_and_a_dedup_hit(blobs: BlobStore) -> None:
    first = put(blobs, b"same bytes")
    second = put(blobs, b"same bytes")
    assert first[0] == second[0] and first[2] and not second[2]


def test_concurrent_placers_of_the_same_bytes_leave_one_intact_blob(blobs: BlobStore) -> None:
    data = os.urandom(1 << 20)
    results: list[tuple[str, int, bool]] = []
    barrier = threading.Barrier(6)

    def place() -> None:
        staging = blobs.stage()
        staging.write(data, 0)
        barrier.wait()
        results.append(blobs.place(staging))
        staging.discard()

    threads = [threading.Thread(target=place) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r[0] for r in results}) == 1
    assert sum(r[2] for r in results) == 1
    assert read(blobs, results[0][0]) == data


def test_an_empty_blob(blobs: BlobStore) -> None:
    sha, size, _ = put(blobs, b"")
    assert size == 0 and read(blobs, sha) == b""


def test_a_missing_blob(blobs: BlobStore) -> None:
    sha = "0" * 64
    assert not blobs.has(sha)
    with pytest.raises(FileNotFoundError):
        blobs.open_blob(sha)
    hashed = blobs.hash_blob(sha)
    assert hashed.actual is None
    blobs.delete(sha)  # deleting what is gone is no error


def test_delete_and_an_open_reader(blobs: BlobStore) -> None:
    sha, _, _ = put(blobs, b"to be deleted")
    fd = blobs.open_blob(sha)
    try:
        blobs.delete(sha)
        assert not blobs.has(sha)
        assert os.pread(fd, 100, 0) == b"to be deleted"  # an open reader keeps its bytes
    finally:
        os.close(fd)


def test_restore_brings_back_a_blob_removed_after_it_was_placed(blobs: BlobStore) -> None:
    staging = blobs.stage()
    try:
        staging.write(b"precious", 0)
        sha, _, _ = blobs.place(staging)
        blobs.delete(sha)
        blobs.restore(staging, sha)
    finally:
        staging.discard()
    assert read(blobs, sha) == b"precious"


def corrupt(blobs: BlobStore, sha256: str, data: bytes) -> None:
    """Overwrite a blob's bytes behind the store's back (what bit rot or a bad disk do)."""
    if isinstance(blobs, LocalBlobStore):
        path = blobs.path(sha256)
        path.chmod(0o644)
        path.write_bytes(data)
        path.chmod(0o444)
    else:
        assert isinstance(blobs, S3BlobStore)
        obstore.put(blobs._store, blobs.key(sha256), data)


def test_hash_blob_reads_the_store_and_quarantine_moves_only_that_object(
        blobs: BlobStore) -> None:
    sha, _, _ = put(blobs, b"good bytes")
    read(blobs, sha)  # a cache, where there is one, holds the good bytes now
    corrupt(blobs, sha, b"bad bytes!")
    hashed = blobs.hash_blob(sha)
    assert hashed.actual != sha and hashed.actual is not None  # read from the store itself
    # Put right again since it was hashed (a registration restored it): left alone.
    blobs.delete(sha)
    put(blobs, b"good bytes")
    assert blobs.quarantine(sha, hashed) is None and blobs.has(sha)
    # Still the object that was hashed: it goes, and no cache serves it afterwards.
    corrupt(blobs, sha, b"bad bytes!")
    assert blobs.quarantine(sha, blobs.hash_blob(sha)) is not None
    assert not blobs.has(sha)
    with pytest.raises(FileNotFoundError):
        blobs.open_blob(sha)


def test_a_blob_placed_for_a_bulk_load_is_whole_and_sync_returns(blobs: BlobStore) -> None:
    """place(durable=False) (a bulk load's close) places the same blob; sync makes it
    durable (what only a crash of the machine could show is test_bulk_load's)."""
    data = os.urandom(100_000)
    staging = blobs.stage()
    try:
        staging.write(data, 0)
        sha, size, new = blobs.place(staging, durable=False)
    finally:
        staging.discard()
    blobs.sync()
    assert (sha, size, new) == (hashlib.sha256(data).hexdigest(), len(data), True)
    assert blobs.has(sha) and read(blobs, sha) == data
    staging = blobs.stage()
    try:
        staging.write(data, 0)
        assert blobs.place(staging, durable=True) == (sha, size, False)  # dedup, synced
    finally:
        staging.discard()


@pytest.mark.parametrize(("durable", "patient", "link_first"), [
    (True, True, False), (True, False, False), (False, True, False),
    (True, False, True), (True, True, True)])
def test_place_batch_places_each_as_place_would_in_order(
        blobs: BlobStore, durable: bool, patient: bool, link_first: bool) -> None:
    """A batch (an import's, or a round of closes: not patient; a durable mount's
    round links first) gives each file what `place` gives it, in order: the same
    bytes twice in one batch are one blob and a dedup hit, and a blob stored before
    the batch is a dedup hit too."""
    earlier = os.urandom(5000)
    put(blobs, earlier)
    datas = [os.urandom(2048), os.urandom(4096), b"", earlier, os.urandom(100)]
    datas.insert(2, datas[0])  # the first file's bytes again
    stagings = [blobs.stage() for _ in datas]
    try:
        for staging, data in zip(stagings, datas, strict=True):
            staging.write(data, 0)
        placed = blobs.place_batch(stagings, durable=durable, patient=patient,
                                   link_first=link_first)
        if not durable:
            blobs.sync()
    finally:
        for staging in stagings:
            staging.discard()
    assert [(sha, size) for sha, size, _ in placed] == [
        (hashlib.sha256(d).hexdigest(), len(d)) for d in datas]
    assert [new for _, _, new in placed] == [True, True, False, True, False, True]
    for (sha, _, _), data in zip(placed, datas, strict=True):
        assert read(blobs, sha) == data
