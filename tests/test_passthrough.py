"""FUSE passthrough (mount/passthrough.py): the kernel reads a document's blob
itself, and what a user sees stays what it is without it.

Read-only mounts use it by default, read-write ones with `-o passthrough`. Whether
a read reached the daemon is in /.casfs/metrics (`casfs_mount_read_requests`
counts the document reads it answered; `casfs_mount_passthrough_opens` the opens
it answered with a backing file).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import platform
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from casfs.config import MountConfig
from casfs.mount.options import MountOptions

from .conftest import Mounter
from .test_metrics import value

pytestmark = pytest.mark.mount


def _kernel_has_passthrough() -> bool:
    major, minor = (int(part) for part in platform.release().split(".")[:2])
    return (major, minor) >= (6, 9)


needs_passthrough = pytest.mark.skipif(
    os.geteuid() != 0 or not _kernel_has_passthrough(),
    reason="FUSE passthrough needs Linux 6.9+ and CAP_SYS_ADMIN")


def metric(mnt: Path, name: str) -> float:
    return value((mnt / ".casfs" / "metrics").read_text(), name)


def write_documents(mounter: Mounter, files: dict[str, bytes]) -> None:
    mnt = mounter.mount()
    (mnt / "r" / "a").mkdir(parents=True)
    for name, data in files.items():
        (mnt / "r" / "a" / name).write_bytes(data)
    mounter.umount()


@needs_passthrough
def test_a_read_only_mount_reads_blobs_without_the_daemon(mounter: Mounter,
                                                          tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    db = tmp_path / "rows.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, f"row {i}") for i in range(5000)))
    conn.close()
    write_documents(mounter, {"big.bin": big, "rows.sqlite": db.read_bytes()})
    mnt = mounter.mount("ro")
    doc = mnt / "r" / "a" / "big.bin"

    assert doc.read_bytes() == big
    with open(doc, "rb") as one, open(doc, "rb") as two:  # one backing file for both
        assert one.read(1 << 20) == big[:1 << 20]
        assert two.read() == big
        with mmap.mmap(one.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            assert hashlib.sha256(mapped).digest() == hashlib.sha256(big).digest()
    copy = tmp_path / "copy.bin"
    subprocess.run(["cp", str(doc), str(copy)], check=True)
    assert copy.read_bytes() == big
    shell = subprocess.run(["sqlite3", "-readonly", str(mnt / "r" / "a" / "rows.sqlite"),
                            "SELECT count(*), max(v) FROM t"],
                           capture_output=True, text=True, check=True)
    assert shell.stdout.strip() == "5000|row 999"

    assert metric(mnt, "casfs_mount_read_requests") == 0
    assert metric(mnt, "casfs_mount_passthrough_opens") >= 5


@needs_passthrough
def test_without_it_reads_go_through_the_daemon(mounter: Mounter) -> None:
    data = os.urandom(1 << 20)
    write_documents(mounter, {"f.bin": data})
    for options in ((), ("ro", "nopassthrough")):
        mnt = mounter.mount(*options)
        assert (mnt / "r" / "a" / "f.bin").read_bytes() == data
        assert metric(mnt, "casfs_mount_read_requests") > 0
        assert metric(mnt, "casfs_mount_passthrough_opens") == 0
        mounter.umount()


@needs_passthrough
def test_a_file_read_through_it_cannot_be_written_until_its_readers_close(
        mounter: Mounter) -> None:
    write_documents(mounter, {"f.txt": b"old bytes\n"})
    mnt = mounter.mount("passthrough")
    doc = mnt / "r" / "a" / "f.txt"
    with open(doc, "rb") as reader:
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
            with pytest.raises(OSError) as caught:
                os.open(doc, flags)
            assert caught.value.errno == errno.ETXTBSY
        with pytest.raises(OSError) as caught:
            os.truncate(doc, 0)
        assert caught.value.errno == errno.ETXTBSY
        assert reader.read() == b"old bytes\n"  # refused writes changed nothing
    doc.write_bytes(b"new bytes\n")  # its readers gone, it takes writes again
    assert doc.read_bytes() == b"new bytes\n"
    assert metric(mnt, "casfs_mount_read_requests") == 0


@needs_passthrough
def test_a_file_open_for_writing_is_read_through_the_daemon(mounter: Mounter) -> None:
    """Law 8: every descriptor reads the file's current bytes, staged ones included;
    a backing file (the old blob) would not show them."""
    write_documents(mounter, {"f.txt": b"old bytes\n"})
    mnt = mounter.mount("passthrough")
    doc = mnt / "r" / "a" / "f.txt"
    with open(doc, "r+b") as writer:
        writer.write(b"NEW")
        writer.flush()
        with open(doc, "rb") as reader:
            assert reader.read() == b"NEW bytes\n"
    assert metric(mnt, "casfs_mount_passthrough_opens") == 0
    assert doc.read_bytes() == b"NEW bytes\n"  # closed: now through the new blob
    assert metric(mnt, "casfs_mount_passthrough_opens") == 1


@needs_passthrough
@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_an_s3_blob_is_passed_through_once_it_is_all_in_the_cache(
        mounter: Mounter, store_path: Path) -> None:
    """A blob still arriving is read through the daemon (its readers wait for their
    bytes); once the host cache holds all of it, the kernel reads the cache file."""
    small, large = os.urandom(64 << 10), os.urandom(12 << 20)  # large: read as it arrives
    write_documents(mounter, {"small.bin": small, "large.bin": large})
    shutil.rmtree(store_path / "cache")  # this host has never read them
    mnt = mounter.mount("ro")
    folder = mnt / "r" / "a"
    assert (folder / "small.bin").read_bytes() == small  # fetched whole before the open
    assert metric(mnt, "casfs_mount_passthrough_opens") == 1
    assert (folder / "large.bin").read_bytes() == large  # cold: through the daemon
    assert metric(mnt, "casfs_mount_read_requests") > 0
    assert metric(mnt, "casfs_mount_passthrough_opens") == 1
    reads = metric(mnt, "casfs_mount_read_requests")
    assert (folder / "large.bin").read_bytes() == large  # warm: the cache file itself
    assert metric(mnt, "casfs_mount_passthrough_opens") == 2
    assert metric(mnt, "casfs_mount_read_requests") == reads


def resident_pages(path: Path) -> int:
    """How many of the file's pages the kernel's page cache holds (fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_a_blob_still_arriving_is_read_without_the_page_cache_and_still_maps(
        mounter: Mounter, store_path: Path) -> None:
    """A cold large S3 blob is opened with direct I/O (reads go straight into the
    reader's buffer, README "Blobs in S3"), and mmap of it still works (the module
    asks the kernel for FUSE_DIRECT_IO_ALLOW_MMAP)."""
    large = os.urandom(12 << 20)
    write_documents(mounter, {"large.bin": large})
    shutil.rmtree(store_path / "cache")
    mnt = mounter.mount()
    doc = mnt / "r" / "a" / "large.bin"
    with open(doc, "rb", buffering=0) as reader, open(doc, "rb") as mapped_one:
        got = bytearray()
        while chunk := reader.read(1 << 20):
            got += chunk
        assert got == large
        assert resident_pages(doc) == 0  # nothing of it went through the page cache
        with mmap.mmap(mapped_one.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            assert hashlib.sha256(mapped).digest() == hashlib.sha256(large).digest()
    mounter.umount()
    mounter.mount()  # cached whole: its first open here reads directly while it is checked
    with open(doc, "rb") as checking:
        assert checking.read() == large  # the end of it waits for the check's verdict
        with open(doc, "rb") as reader:  # checked: read through the page cache as before
            assert reader.read() == large
            assert resident_pages(doc) > 0  # (an open of a file already open keeps them)


def test_the_options_say_when_to_ask_for_it() -> None:
    parse = MountOptions.parse
    assert parse([], MountConfig()).use_passthrough is False  # read-write: refuses nothing
    assert parse(["ro"], MountConfig()).use_passthrough is True
    assert parse(["ro,nopassthrough"], MountConfig()).use_passthrough is False
    assert parse(["passthrough"], MountConfig()).use_passthrough is True
    for options in (["passthrough"], ["ro", "nopassthrough"]):  # handed on to the daemon
        parsed = parse(options, MountConfig())
        assert parse(parsed.to_strings()[1:], MountConfig()) == parsed


@needs_passthrough
@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_a_damaged_cache_file_is_never_served_from_the_page_cache(
        mounter: Mounter, store_path: Path) -> None:
    """The first open of a cached blob in a mount reads it directly while the cache
    checks it: when the check rejects the file, the reader of its end gets EIO, and
    the next open fetches the blob again, with nothing of the damaged file kept by
    the kernel (nor passed through)."""
    large = os.urandom(12 << 20)
    write_documents(mounter, {"large.bin": large})  # the writer's host keeps it cached
    sha = hashlib.sha256(large).hexdigest()
    cached = store_path / "cache" / sha[:2] / sha[2:]
    cached.chmod(0o644)
    with open(cached, "r+b") as f:
        f.seek(len(large) // 2)
        f.write(b"rot")
    mnt = mounter.mount("ro")
    doc = mnt / "r" / "a" / "large.bin"
    with open(doc, "rb") as reader, pytest.raises(OSError) as caught:
        reader.read()
    assert caught.value.errno == errno.EIO
    assert doc.read_bytes() == large
    assert doc.read_bytes() == large  # the fetched copy, checked: passed through
    assert metric(mnt, "casfs_mount_passthrough_opens") >= 1


class FakeShim:
    """The C module's side, recorded (the kernel's rules are what is tested here)."""

    def __init__(self, agreed: bool) -> None:
        self.agreed = agreed
        self.replies: list[tuple[int, int, bool]] = []
        self.closed: list[int] = []

    def negotiated(self) -> bool:
        return self.agreed

    def hooked(self) -> bool:
        return True

    def open_backing(self, fd: int) -> int:
        if fd == 99:
            raise PermissionError(errno.EPERM, "refused")
        return 7

    def reply_passthrough(self, fh: int, backing_id: int, direct_io: bool) -> None:
        self.replies.append((fh, backing_id, direct_io))

    def close_backing(self, backing_id: int) -> None:
        self.closed.append(backing_id)


class File:
    def __init__(self, fd: int | None, open_handles: int = 1) -> None:
        self.whole_blob_fd = fd
        self.open_handles = open_handles
        self.backing_id: int | None = None


def test_one_backing_file_per_inode_by_the_kernels_rules(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from casfs.mount import passthrough as module

    shim = FakeShim(agreed=True)
    monkeypatch.setattr(module, "_shim", shim)
    chosen = module.Passthrough(wanted=True)
    busy = File(5, open_handles=2)  # open elsewhere, in the page cache's mode
    assert not chosen.serve(busy, fh=1) and busy.backing_id is None
    arriving = File(None)
    assert not chosen.serve(arriving, fh=2)
    alone = File(5)
    assert chosen.serve(alone, fh=3) and alone.backing_id == 7
    alone.open_handles = 2
    assert chosen.serve(alone, fh=4)  # a second descriptor: the same backing file
    assert shim.replies == [(3, 7, False), (4, 7, False)]
    refused = File(99)
    assert not chosen.serve(refused, fh=5)  # the kernel refused: off for the mount
    assert not chosen.on and not chosen.serve(File(5), fh=6)
    assert chosen.serve(alone, fh=7)  # but a file that has one keeps getting it
    chosen.release(alone)
    assert shim.closed == [7] and alone.backing_id is None
