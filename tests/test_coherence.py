"""Coherence: every descriptor reads the right bytes (law 8, README "Consistency").

The reproductions of what used to go wrong: a descriptor reading an older version
after its own fsync, `>>` while a follower polls, descriptors after unlink and
rename-over, readers during gc, a second mount reading across overwrites, and
directory mtimes and extended attributes as cp/rsync/mv use them.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs.store import Store
from casfs.tools import cli

from .conftest import ALL_BACKENDS, Mounter

pytestmark = ALL_BACKENDS


def artifact(mnt: Path, name: str = "W1") -> Path:
    path = mnt / "unpaywall" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def second(store_path: Path, tmp_path: Path, mounter: Mounter) -> Iterator[Mounter]:
    """A second mount of the same store (as another host would have)."""
    other = Mounter(store_path, tmp_path / "mnt2")
    try:
        yield other
    finally:
        other.cleanup()


def test_a_descriptor_reads_its_own_bytes_after_a_second_fsync(mnt: Path) -> None:
    path = artifact(mnt) / "f.bin"
    path.write_bytes(b"A" * 10_000)
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, b"B" * 20_000, 0)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.fstat(fd).st_size == 20_000
        assert os.pread(fd, 30_000, 0) == b"B" * 20_000
        os.pwrite(fd, b"C" * 5, 20_000)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, 30_000, 0) == b"B" * 20_000 + b"C" * 5
    finally:
        os.close(fd)
    assert path.read_bytes() == b"B" * 20_000 + b"C" * 5


def test_two_descriptors_share_the_bytes_through_fsync_and_truncate(mnt: Path) -> None:
    path = artifact(mnt) / "shared.bin"
    path.write_bytes(b"x" * 4096)
    reader = os.open(path, os.O_RDONLY)
    writer = os.open(path, os.O_RDWR)
    try:
        os.pwrite(writer, b"y" * 8192, 0)
        os.fsync(writer)
        os.posix_fadvise(reader, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(reader, 10_000, 0) == b"y" * 8192
        os.ftruncate(writer, 100)
        os.fsync(writer)
        assert os.fstat(reader).st_size == 100
        assert os.pread(reader, 10_000, 0) == b"y" * 100
    finally:
        os.close(reader)
        os.close(writer)


def test_an_open_descriptor_survives_unlink(mnt: Path) -> None:
    path = artifact(mnt) / "gone.txt"
    path.write_bytes(b"still here\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        path.unlink()
        assert not path.exists()
        assert os.fstat(fd).st_size == 11
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"still here\n"
    finally:
        os.close(fd)


def test_an_open_descriptor_survives_rename_over(mnt: Path) -> None:
    directory = artifact(mnt)
    old, new = directory / "data.csv", directory / "data.csv.tmp"
    old.write_bytes(b"old,bytes\n" * 100)
    new.write_bytes(b"new\n")
    fd = os.open(old, os.O_RDONLY)
    try:
        os.rename(new, old)  # what rsync and editors do
        assert old.read_bytes() == b"new\n"
        assert os.fstat(fd).st_size == 1000
        assert os.pread(fd, 5000, 0) == b"old,bytes\n" * 100
    finally:
        os.close(fd)


def test_a_reader_keeps_the_old_bytes_through_an_overwrite_elsewhere_and_gc(
        mnt: Path, second: Mounter, mounter: Mounter) -> None:
    other = second.mount()
    path = artifact(mnt) / "paper.pdf"
    old = os.urandom(300_000)
    path.write_bytes(old)
    with path.open("rb") as reader:
        first = reader.read(1000)
        (other / "unpaywall" / "W1" / "paper.pdf").write_bytes(b"rewritten elsewhere")
        store = str(mounter.store_path)
        assert cli.main(["--store", store, "gc", "--grace", "0", "--keep-history", "0",
                         "--apply"]) == 0
        with Store.open(mounter.store_path) as opened:
            assert not opened.blobs.has(hashlib.sha256(old).hexdigest())  # gc took it
        os.posix_fadvise(reader.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert first + reader.read() == old
        assert os.fstat(reader.fileno()).st_size == len(old)
    # Closed: the next open takes the version written on the other mount.
    assert path.read_bytes() == b"rewritten elsewhere"


def test_appends_while_a_follower_polls(mnt: Path) -> None:
    """What `tail -f` does: fstat, then read what is new; `>>` from a shell."""
    path = artifact(mnt) / "log.txt"
    subprocess.run(["sh", "-c", f"echo 'line 0' > '{path}'"], check=True)
    seen = bytearray()
    stop = threading.Event()

    def follow() -> None:
        with path.open("rb") as f:
            while not stop.is_set():
                size = os.fstat(f.fileno()).st_size
                if size > len(seen):
                    seen.extend(os.pread(f.fileno(), size - len(seen), len(seen)))
                time.sleep(0.02)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        for i in range(1, 21):
            subprocess.run(["sh", "-c", f"echo 'line {i}' >> '{path}'"], check=True)
            time.sleep(0.05)
        expected = "".join(f"line {i}\n" for i in range(21)).encode()
        deadline = time.monotonic() + 5
        while bytes(seen) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        follower.join()
    assert bytes(seen) == expected
    assert path.read_bytes() == expected


def test_tail_follows_appends(mnt: Path) -> None:
    path = artifact(mnt) / "tail.log"
    path.write_bytes(b"line 0\n")
    tail = subprocess.Popen(["tail", "-f", "-s", "0.1", str(path)], stdout=subprocess.PIPE)
    try:
        time.sleep(0.3)
        for i in range(1, 6):
            with path.open("ab") as f:
                f.write(f"line {i}\n".encode())
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        tail.terminate()
        out, _ = tail.communicate(timeout=10)
    expected = "".join(f"line {i}\n" for i in range(6)).encode()
    assert out == expected
    assert path.read_bytes() == expected


@pytest.mark.parametrize("cache_timeout", ["1"])
def test_a_read_only_mount_never_reads_a_mix(mnt: Path, second: Mounter,
                                            cache_timeout: str) -> None:
    ro = second.mount("ro", f"cache_timeout={cache_timeout}")
    path = artifact(mnt) / "v.txt"
    versions = [b"version-one\n", b"version-two-is-longer\n", b"v3\n",
                b"version-four-is-the-longest-of-all\n" * 3, b"5\n"]
    seen_path = ro / "unpaywall" / "W1" / "v.txt"
    for i, content in enumerate(versions):
        path.write_bytes(content)
        deadline = time.monotonic() + float(cache_timeout) + 3
        while True:
            try:
                got = seen_path.read_bytes()
            except FileNotFoundError:
                got = None
            assert got is None or got in versions[:i + 1], (i, got)
            if got == content:
                break
            assert time.monotonic() < deadline, f"version {i} never arrived: {got!r}"
            time.sleep(0.05)


def test_a_ro_reader_open_across_an_overwrite_reads_one_whole_version(
        mnt: Path, second: Mounter) -> None:
    ro = second.mount("ro", "cache_timeout=0.5")
    path = artifact(mnt) / "big.bin"
    old = os.urandom(1 << 20)
    path.write_bytes(old)
    seen = ro / "unpaywall" / "W1" / "big.bin"
    with seen.open("rb") as reader:
        head = reader.read(100_000)
        path.write_bytes(b"short")
        time.sleep(1)
        assert head + reader.read() == old
    assert seen.read_bytes() == b"short"


def test_directory_mtimes_are_kept(mnt: Path, mounter: Mounter) -> None:
    directory = artifact(mnt)
    assert os.stat(mnt).st_mtime > 1_000_000_000  # not 1970
    subprocess.run(["touch", "-d", "2021-03-04 05:06:07 UTC", str(directory)], check=True)
    subprocess.run(["touch", "-d", "2020-01-01 00:00:00 UTC", str(mnt / "unpaywall")],
                   check=True)
    subprocess.run(["touch", "-d", "2019-01-01 00:00:00 UTC", str(mnt)], check=True)
    expected = {directory: 1614834367, mnt / "unpaywall": 1577836800, mnt: 1546300800}
    for path, when in expected.items():
        assert os.stat(path).st_mtime == when
    mounter.remount()
    for path, when in expected.items():
        assert os.stat(path).st_mtime == when


def test_attributes_round_trip_through_cp_mv_and_rsync(mnt: Path, tmp_path: Path) -> None:
    """A copy out keeps user.casfs.*; copying it back to where it was works."""
    directory = artifact(mnt)
    source = directory / "a.pdf"
    content = b"%PDF-1.4 attributes"
    source.write_bytes(content)
    os.setxattr(source, "user.casfs.source_url", b"https://example.org/a.pdf")
    outside = tmp_path / "outside"
    outside.mkdir()
    copy = outside / "a.pdf"
    subprocess.run(["cp", "-a", str(source), str(copy)], check=True)
    assert os.getxattr(copy, "user.casfs.sha256")
    for command in (["rsync", "-aX"], ["cp", "-a"], ["mv"]):
        source.unlink()
        result = subprocess.run([*command, str(copy), str(source)], capture_output=True,
                                text=True)
        assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
        assert source.read_bytes() == content
        assert os.getxattr(source, "user.casfs.source_url") == b"https://example.org/a.pdf"
        if command == ["mv"]:
            break
    # A directory's attributes copy back too (rsync -aX of a tree).
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-a", str(directory), str(tree)], check=True)
    result = subprocess.run(["rsync", "-aX", f"{tree}/", f"{directory}/"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # The hash cannot be set to anything else; foreign user.* attributes are accepted
    # and not kept (what browsers and wget --xattr add); other namespaces: ENOTSUP.
    with pytest.raises(OSError) as raised:
        os.setxattr(source, "user.casfs.sha256", b"0" * 64)
    assert raised.value.errno == errno.EPERM
    os.setxattr(source, "user.xdg.origin.url", b"https://example.org/a.pdf")
    assert "user.xdg.origin.url" not in os.listxattr(source)
    with pytest.raises(OSError) as raised:
        os.setxattr(source, "trusted.x", b"1")
    assert raised.value.errno in (errno.ENOTSUP, errno.EPERM)


def test_a_write_only_descriptor_is_seen_at_once_by_readers_and_mappings(mnt: Path) -> None:
    """A write-only open bypasses the kernel's page cache (direct_io); a reader that
    has the file's pages cached, and a shared mapping of it, see each write at once,
    and the size it grows to."""
    path = artifact(mnt) / "w.bin"
    path.write_bytes(b"a" * 65536)
    reader = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(reader, 65536, 0) == b"a" * 65536  # now in the page cache
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            assert mapped[8192:8196] == b"aaaa"
            writer = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(writer, b"b" * 4096, 8192)
                expected = b"a" * 8192 + b"b" * 4096 + b"a" * (65536 - 12288)
                assert os.pread(reader, 70000, 0) == expected
                assert mapped[8192:12288] == b"b" * 4096
                os.pwrite(writer, b"c" * 100, 65536)
                assert os.fstat(reader).st_size == 65636
                assert os.pread(reader, 200, 65500) == b"a" * 36 + b"c" * 100
            finally:
                os.close(writer)
        assert os.pread(reader, 70000, 0) == expected + b"c" * 100
    finally:
        os.close(reader)
    assert path.read_bytes() == expected + b"c" * 100


def test_a_file_closed_in_a_directory_renamed_elsewhere_lands_at_its_new_place(
        mnt: Path, second: Mounter, mounter: Mounter) -> None:
    """A mount keeps the directories it looked up (cache_timeout); where a closed
    file is registered is still the directory's place now, not the kept one."""
    other = second.mount()
    artifact(mnt)
    (artifact(mnt) / "first.txt").write_bytes(b"makes the mount keep W1")
    assert os.path.exists(other / "unpaywall" / "W1" / "first.txt")
    with (mnt / "unpaywall" / "W1" / "paper.pdf").open("wb") as writer:
        writer.write(b"written while W1 was renamed on another mount")
        os.rename(other / "unpaywall" / "W1", other / "unpaywall" / "W2")
        deadline = time.monotonic() + 15
        while not os.path.isdir(mnt / "unpaywall" / "W2"):  # the rename was seen
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)  # and announced, where the catalog announces
    with Store.open(mounter.store_path) as opened:
        moved = opened.catalog.find_directory("unpaywall", "W2")
        assert moved is not None
        doc = opened.catalog.lookup_document(moved, "paper.pdf")
        assert doc is not None and doc.bytes == len(b"written while W1 was renamed on "
                                                    b"another mount")
        assert opened.catalog.find_directory("unpaywall", "W1") is None
