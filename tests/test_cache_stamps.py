"""A host's read cache hashes a cached file again only when it changed since it was
found right (casfs/blobs/cache_stamps.py): an unchanged file is trusted by the next
process without a hash, and any change through the filesystem (a write, even one
that keeps the size and puts the modification time back) is found, in this process
or the next. Real files in a real cache directory; the object store's side is the
cache's `fetch` callable, which hands over the blob's bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs.blobs import cache, cache_stamps
from casfs.blobs.cache import EARLY_FROM, ReadCache
from casfs.blobs.cache_stamps import COMPACT_FROM, Stamps


def fetcher(data: bytes, fetched: list[int]) -> cache.Fetch:
    def fetch() -> Iterator[bytes]:
        fetched.append(len(data))
        yield data
    return fetch


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the cached files the cache hashes again (reads to check them)."""
    sizes: list[int] = []
    real = cache.read_chunks

    def counted(fd: int, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        sizes.append(size)
        return real(fd, size, chunk)

    monkeypatch.setattr(cache, "read_chunks", counted)
    return sizes


def read_small(reader: ReadCache, sha: str, fetch: cache.Fetch) -> bytes:
    fd = reader.open(sha, fetch)
    try:
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


def read_large(reader: ReadCache, sha: str, size: int, fetch: cache.Fetch
               ) -> tuple[bytes, bool]:
    """Every byte through `open_early`, and whether a check of the file ran."""
    fd, arrival = reader.open_early(sha, size, fetch)
    try:
        if arrival is not None:
            arrival.wait_for(size)
        return os.pread(fd, size, 0), arrival is not None
    finally:
        os.close(fd)


def damage(path: Path, at: int, *, keep_mtime: bool = False) -> None:
    before = path.stat()
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(b"rot")
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_an_unchanged_small_file_is_trusted_by_the_next_process(
        tmp_path: Path, hashed: list[int]) -> None:
    data, fetched = os.urandom(100_000), []
    sha = hashlib.sha256(data).hexdigest()
    assert read_small(ReadCache(tmp_path, 1 << 30), sha, fetcher(data, fetched)) == data
    assert read_small(ReadCache(tmp_path, 1 << 30), sha, fetcher(data, fetched)) == data
    assert fetched == [len(data)] and hashed == []  # the fill hashed it, nothing after


def test_an_unchanged_large_file_is_trusted_by_the_next_process(
        tmp_path: Path, hashed: list[int]) -> None:
    data, fetched = os.urandom(EARLY_FROM + 4096), []
    sha = hashlib.sha256(data).hexdigest()
    assert read_large(ReadCache(tmp_path, 1 << 30), sha, len(data),
                      fetcher(data, fetched)) == (data, True)  # arriving
    # A new process: read without a check, so the mount serves it as a local blob.
    assert read_large(ReadCache(tmp_path, 1 << 30), sha, len(data),
                      fetcher(data, fetched)) == (data, False)
    assert fetched == [len(data)] and hashed == []


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["written", "mtime-put-back"])
@pytest.mark.parametrize("same_process", [True, False], ids=["same-process", "next-process"])
def test_a_small_file_changed_since_it_was_found_right_is_fetched_anew(
        tmp_path: Path, hashed: list[int], keep_mtime: bool, same_process: bool) -> None:
    data, fetched = os.urandom(100_000), []
    sha = hashlib.sha256(data).hexdigest()
    reader = ReadCache(tmp_path, 1 << 30)
    assert read_small(reader, sha, fetcher(data, fetched)) == data
    damage(reader.path(sha), 500, keep_mtime=keep_mtime)
    if not same_process:
        reader = ReadCache(tmp_path, 1 << 30)
    assert read_small(reader, sha, fetcher(data, fetched)) == data
    assert fetched == [len(data)] * 2 and hashed == [len(data)]
    assert reader.path(sha).read_bytes() == data
    assert read_small(ReadCache(tmp_path, 1 << 30), sha, fetcher(data, fetched)) == data
    assert hashed == [len(data)]  # the new copy is trusted in turn


def test_a_large_file_changed_since_it_was_found_right_fails_its_check(
        tmp_path: Path, hashed: list[int]) -> None:
    data, fetched = os.urandom(EARLY_FROM + 4096), []
    sha = hashlib.sha256(data).hexdigest()
    reader = ReadCache(tmp_path, 1 << 30)
    read_large(reader, sha, len(data), fetcher(data, fetched))
    damage(reader.path(sha), EARLY_FROM, keep_mtime=True)
    fd, arrival = reader.open_early(sha, len(data), fetcher(data, fetched))
    try:
        assert arrival is not None
        with pytest.raises(OSError, match="damaged"):
            arrival.wait_for(len(data))
    finally:
        os.close(fd)
    assert not reader.path(sha).exists()  # dropped: the next open fetches it anew
    assert read_large(reader, sha, len(data), fetcher(data, fetched)) == (data, True)
    assert fetched == [len(data)] * 2


def test_a_stamps_log_that_does_not_read_is_ignored_and_spares_no_hash(
        tmp_path: Path, hashed: list[int]) -> None:
    """Lines that do not read are skipped; a stamp that does not match the file (a
    forged or stale one) only means a hash."""
    good, bad, fetched = os.urandom(5000), os.urandom(6000), []
    good_sha, bad_sha = (hashlib.sha256(d).hexdigest() for d in (good, bad))
    reader = ReadCache(tmp_path, 1 << 30)
    read_small(reader, good_sha, fetcher(good, fetched))
    read_small(reader, bad_sha, fetcher(bad, fetched))
    damage(reader.path(bad_sha), 10)
    st = reader.path(bad_sha).stat()
    with open(tmp_path / ".stamps", "a") as log:
        log.write("not a stamp\n" + good_sha[:20] + " 1 2\n\x00\xff junk\n")
        log.write(f"{bad_sha} {st.st_ino} {st.st_size} {st.st_mtime_ns} 12345\n")
        log.write(f"{bad_sha} {st.st_ino} {st.st_size} {st.st_mtime_ns}")  # torn
    fresh = ReadCache(tmp_path, 1 << 30)
    assert read_small(fresh, good_sha, fetcher(good, fetched)) == good
    assert read_small(fresh, bad_sha, fetcher(bad, fetched)) == bad
    assert hashed == [len(bad)] and fetched == [len(good), len(bad), len(bad)]


def test_the_log_is_rewritten_once_it_has_grown_well_past_what_it_holds(
        tmp_path: Path) -> None:
    files = [tmp_path / f"f{k}" for k in range(3)]
    shas = [hashlib.sha256(bytes([k])).hexdigest() for k in range(3)]
    stamps = Stamps(tmp_path / ".stamps")
    for turn in range(COMPACT_FROM * 3):
        path = files[turn % 3]
        path.write_bytes(os.urandom(turn % 7 + 1))  # a new stamp each time
        stamps.record(shas[turn % 3], path.stat())
    lines = (tmp_path / ".stamps").read_text().splitlines()
    assert len(lines) <= COMPACT_FROM + 3
    stamps.forget(shas[0])
    again = Stamps(tmp_path / ".stamps")
    assert not again.trusted(shas[0], files[0].stat())
    assert all(again.trusted(sha, path.stat()) for sha, path in zip(shas[1:], files[1:],
                                                                     strict=True))


def test_a_log_that_cannot_be_written_keeps_the_stamps_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    stamps = Stamps(tmp_path / "a-file" / ".stamps")  # ENOTDIR, even for root
    st = (tmp_path / "a-file").stat()
    sha = "ab" * 32
    stamps.record(sha, st)
    stamps.record("cd" * 32, st)
    assert stamps.trusted(sha, st)
    said = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("cannot write") for m in said) == 1, said  # said once


def test_the_latest_stamps_are_kept_and_the_oldest_let_go_past_the_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stamp let go only means a hash at the next open; memory stays bounded."""
    monkeypatch.setattr(cache_stamps, "MAX_STAMPS", 5)
    files = [tmp_path / f"f{k}" for k in range(8)]
    shas = [hashlib.sha256(bytes([k])).hexdigest() for k in range(8)]
    stamps = Stamps(tmp_path / ".stamps")
    for sha, path in zip(shas, files, strict=True):
        path.write_bytes(sha.encode())
        stamps.record(sha, path.stat())
    stamps.record(shas[0], files[0].stat())  # recorded again: the latest now
    for kept in (stamps, Stamps(tmp_path / ".stamps")):
        assert [kept.trusted(sha, path.stat()) for sha, path in zip(shas, files, strict=True)
                ] == [True, False, False, False, True, True, True, True]
