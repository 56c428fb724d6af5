"""The staging files a mount makes ahead of its creates (mount/staging_reserve.py):
real files in a temporary directory, named so that what is left behind shows."""

import errno
import hashlib
import os
import time
from pathlib import Path

import pytest
import trio

from casfs.blobs.local import LocalBlobStore
from casfs.blobs.staging import Stager, StagingFile
from casfs.mount.staging_reserve import RENEW_FROM, StagingReserve


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_creates_take_files_made_ahead_and_close_removes_the_rest(tmp_path: Path) -> None:
    stager = Stager(tmp_path, unnamed=False)
    reserve = StagingReserve(stager.stage, keep=4, refill_at=2)

    async def take() -> StagingFile:
        return await reserve.take()

    first = trio.run(take)  # none ready yet: made for this take
    assert reserve.made_here == 1
    wait_until(lambda: len(list(tmp_path.glob("*.part"))) == 1 + 4)
    taken = [trio.run(take) for _ in range(3)]
    assert reserve.made_here == 1  # all three were ready
    for staging in [first, *taken]:
        staging.write(b"bytes of its own", 0)
        assert staging.path is not None and staging.path.read_bytes() == b"bytes of its own"
    assert len({s.path for s in [first, *taken]}) == 4
    # Refilled once two or fewer were left (after the second take), back up to 4; the
    # third take may come before or after that refill.
    wait_until(lambda: len(list(tmp_path.glob("*.part"))) - 4 in (3, 4))

    reserve.close()
    assert sorted(tmp_path.glob("*.part")) == sorted(s.path for s in [first, *taken]
                                                     if s.path is not None)
    for staging in [first, *taken]:
        staging.discard()
    assert list(tmp_path.iterdir()) == []


def test_an_error_making_a_staging_file_reaches_the_create_and_passes(tmp_path: Path) -> None:
    stager = Stager(tmp_path, unnamed=False)
    failing = True

    def make() -> StagingFile:
        if failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return stager.stage()

    reserve = StagingReserve(make, keep=2, refill_at=1)
    with pytest.raises(OSError) as raised:
        trio.run(reserve.take)
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
    failing = False  # the disk has room again: the next take works, the thread refills
    staging = trio.run(reserve.take)
    staging.write(b"x", 0)
    wait_until(lambda: len(list(tmp_path.glob("*.part"))) == 1 + 2, timeout=5)
    reserve.close()
    staging.discard()
    assert list(tmp_path.iterdir()) == []


def blob_from_the_reserve(tmp_path: Path, data: bytes
                          ) -> tuple[LocalBlobStore, StagingReserve, StagingFile, str]:
    """A store, a reserve of its staging files, and a new blob placed from one of
    them: (store, reserve, that staging file, the blob's hash)."""
    store = LocalBlobStore(tmp_path / "cas", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    reserve = StagingReserve(store.stage, keep=2, refill_at=0)
    blob = trio.run(reserve.take)
    blob.write(data, 0)
    sha256, _, new = store.place(blob)
    assert new
    return store, reserve, blob, sha256


def test_a_staging_file_no_name_holds_comes_back_empty_and_a_linked_one_never(
        tmp_path: Path) -> None:
    """A dedup hit's staging file is emptied and taken again (no inode freed and
    made anew); one that became a blob (linked) is never emptied: that would empty
    the blob."""
    store, reserve, blob, sha256 = blob_from_the_reserve(tmp_path, b"the bytes of a new blob")
    hit = trio.run(reserve.take)
    hit.write(b"the bytes of a new blob", 0)
    assert store.place(hit) == (sha256, 23, False)  # a dedup hit
    hit_ino, blob_ino = os.fstat(hit.fd).st_ino, os.fstat(blob.fd).st_ino
    assert hit.reusable() and not blob.reusable()

    reserve.give_back(blob)
    reserve.give_back(hit)
    # Take until the dedup hit's inode comes back (the thread empties it once a
    # few came back, or the reserve runs low).
    seen: list[StagingFile] = []
    deadline = time.monotonic() + 10
    while True:
        staging = trio.run(reserve.take)
        seen.append(staging)
        if os.fstat(staging.fd).st_ino == hit_ino:
            break
        assert time.monotonic() < deadline, "the dedup hit's staging file never came back"
    assert all(os.fstat(s.fd).st_ino != blob_ino for s in seen)
    assert staging.size == 0 and staging.read(100, 0) == b""
    staging.write(b"another file", 0)
    assert staging.digest() == hashlib.sha256(b"another file").hexdigest()
    assert hit.fd == -1  # the old object is closed for good
    assert store.path(sha256).read_bytes() == b"the bytes of a new blob"
    reserve.close()
    for s in seen:
        s.discard()


def test_a_blob_removed_before_its_staging_file_comes_back_is_never_emptied(
        tmp_path: Path) -> None:
    """gc may remove a blob (a superseded version, --grace 0) before the reserve's
    thread sees its staging file: the file has no name then, yet it was the blob,
    and a pin may still read it. It is closed, never emptied and taken again (a
    create would get an inode Linux refuses to link a second time: ENOENT, EIO at
    its close)."""
    store, reserve, blob, sha256 = blob_from_the_reserve(tmp_path, b"a version gc removes")
    pin = store.open_blob(sha256)
    store.delete(sha256)  # gc, before the staging file comes back
    assert os.fstat(blob.fd).st_nlink == 0 and not blob.reusable()
    hit = trio.run(reserve.take)
    other = trio.run(reserve.take)
    other.write(b"already stored", 0)
    other_sha, _, _ = store.place(other)
    hit.write(b"already stored", 0)
    assert store.place(hit) == (other_sha, 14, False)  # a dedup hit: reusable
    blob_ino, hit_ino = os.fstat(blob.fd).st_ino, os.fstat(hit.fd).st_ino

    reserve.give_back(blob)
    reserve.give_back(hit)
    seen: list[StagingFile] = []
    deadline = time.monotonic() + 10
    while True:  # the thread judges what came back in order: the blob's, then the hit's
        staging = trio.run(reserve.take)
        seen.append(staging)
        if os.fstat(staging.fd).st_ino == hit_ino:
            break
        assert time.monotonic() < deadline, "the dedup hit's staging file never came back"
    assert all(os.fstat(s.fd).st_ino != blob_ino for s in seen)
    assert os.pread(pin, 100, 0) == b"a version gc removes"  # not emptied under its pin
    os.close(pin)
    reserve.close()
    for s in [*seen, other]:
        s.discard()


def test_files_given_back_to_a_full_reserve_are_emptied_not_discarded(
        tmp_path: Path) -> None:
    """A reserve that is full when dedup hits' staging files come back still empties
    them for the next creates (up to RENEW_FROM over `keep`), rather than freeing
    their inodes and making new ones later."""
    store = LocalBlobStore(tmp_path / "cas", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    reserve = StagingReserve(store.stage, keep=2, refill_at=0)
    trio.run(reserve.take).discard()  # starts the thread, which fills the reserve
    wait_until(lambda: reserve.made_ahead >= 2)  # full after the take
    hits = [store.stage() for _ in range(RENEW_FROM)]
    for hit in hits:
        hit.write(b"bytes the store already had", 0)
        assert hit.reusable()
        reserve.give_back(hit)
    wait_until(lambda: reserve.reused == RENEW_FROM)
    assert all(hit.fd == -1 for hit in hits)  # each went on as an emptied file
    reserve.close()
