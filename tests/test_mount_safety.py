"""What the mount refuses, and what it must never lose: -o ro, xattrs, hostile names,
concurrent writers of the same bytes, a full filesystem."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from casfs.store import Store

from .conftest import Mounter, needs_root


def errno_of(action: Callable[[], object]) -> int:
    with pytest.raises(OSError) as info:
        action()
    assert info.value.errno is not None
    return info.value.errno


def seeded(mounter: Mounter) -> Path:
    """Mount read-write, make one file, and remount read-only."""
    mnt = mounter.mount()
    (mnt / "unpaywall" / "W1").mkdir(parents=True)
    (mnt / "unpaywall" / "W1" / "a.txt").write_bytes(b"kept")
    return mounter.remount("ro")


def test_a_read_only_mount_refuses_every_change_with_erofs(mounter: Mounter) -> None:
    mnt = seeded(mounter)
    d = mnt / "unpaywall" / "W1"
    f = d / "a.txt"
    assert f.read_bytes() == b"kept"
    assert os.getxattr(f, "user.casfs.resolver") == b"unpaywall"
    refused = {
        "create": lambda: (d / "new.txt").write_bytes(b"x"),
        "write": lambda: f.open("r+b"),
        "truncate": lambda: os.truncate(f, 0),
        "unlink": lambda: os.unlink(f),
        "rename": lambda: os.rename(f, d / "b.txt"),
        "mkdir": lambda: os.mkdir(mnt / "new-resolver"),
        "rmdir": lambda: os.rmdir(d),
        "link": lambda: os.link(f, d / "c.txt"),
        "setxattr": lambda: os.setxattr(f, "user.casfs.content_type", b"text/x"),
        "utime": lambda: os.utime(f, (1, 1)),
    }
    codes = {name: errno_of(action) for name, action in refused.items()}
    assert codes == dict.fromkeys(refused, errno.EROFS)
    assert f.read_bytes() == b"kept"


def test_xattrs_show_the_record_and_only_some_are_settable(mnt: Path, tmp_path: Path) -> None:
    f = mnt / "unpaywall" / "W1" / "a.pdf"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"%PDF")
    names = set(os.listxattr(f))
    assert {"user.casfs.sha256", "user.casfs.resolver", "user.casfs.artifact_id",
            "user.casfs.content_type"} <= names
    assert os.getxattr(f, "user.casfs.sha256") == hashlib.sha256(b"%PDF").hexdigest().encode()
    assert os.getxattr(f, "user.casfs.content_type") == b"application/pdf"
    os.setxattr(f, "user.casfs.source_url", b"https://pub.example/a.pdf")
    os.setxattr(f, "user.casfs.run_id", b"run-42")
    assert os.getxattr(f, "user.casfs.source_url") == b"https://pub.example/a.pdf"
    assert os.getxattr(f, "user.casfs.run_id") == b"run-42"
    assert errno_of(lambda: os.setxattr(f, "user.casfs.sha256", b"0" * 64)) == errno.EPERM
    os.setxattr(f, "user.other", b"x")  # foreign user.* attributes: accepted, not kept
    assert errno_of(lambda: os.getxattr(f, "user.other")) == errno.ENODATA
    assert errno_of(lambda: os.setxattr(f, "user.casfs.unknown", b"x")) == errno.ENOTSUP
    assert errno_of(lambda: os.getxattr(f, "user.casfs.nothing")) == errno.ENODATA
    # Other namespaces are not supported, as on a filesystem without labels or ACLs.
    for foreign in ("security.selinux", "system.posix_acl_access", "trusted.x"):
        assert errno_of(lambda n=foreign: os.getxattr(f, n)) == errno.ENOTSUP, foreign
        assert errno_of(lambda n=foreign: os.removexattr(f, n)) == errno.ENOTSUP, foreign
    assert errno_of(lambda: os.setxattr(f, "security.x", b"x")) == errno.ENOTSUP
    assert os.getxattr(f.parent, "user.casfs.artifact_id") == b"W1"
    # Set on an open file before close: applied when the file is registered.
    g = f.parent / "b.html"
    with g.open("wb") as out:
        out.write(b"<html>")
        os.setxattr(g, "user.casfs.source_url", b"https://pub.example/b")
    assert os.getxattr(g, "user.casfs.source_url") == b"https://pub.example/b"
    # Two records of one artifact cannot claim the same source URL (the seeds' key).
    assert errno_of(lambda: os.setxattr(g, "user.casfs.source_url",
                                        b"https://pub.example/a.pdf")) == errno.EEXIST


HOSTILE: list[tuple[str, Callable[[Path], object], set[int]]] = [
    ("file at depth 1", lambda m: (m / "loose.txt").write_bytes(b"x"), {errno.EPERM}),
    ("file at depth 2", lambda m: (m / "unpaywall" / "loose.txt").write_bytes(b"x"),
     {errno.EPERM}),
    ("directory at depth 3", lambda m: os.mkdir(m / "unpaywall" / "W1" / "sub"), {errno.EPERM}),
    ("name over 255 bytes", lambda m: (m / "unpaywall" / "W1" / ("x" * 256)).write_bytes(b"x"),
     {errno.ENAMETOOLONG}),
    ("non-UTF-8 name", lambda m: os.open(os.path.join(bytes(m), b"unpaywall/W1/caf\xe9"),
                                         os.O_CREAT | os.O_WRONLY), {errno.EILSEQ}),
    ("'..' as a new name", lambda m: os.mkdir(m / "unpaywall" / "W1" / ".."), {errno.EEXIST}),
    ("symlink", lambda m: os.symlink("/etc/passwd", m / "unpaywall" / "W1" / "l"),
     {errno.EPERM}),
    ("fifo", lambda m: os.mkfifo(m / "unpaywall" / "W1" / "p"), {errno.EPERM}),
    ("reserved .casfs", lambda m: os.mkdir(m / ".casfs"), {errno.EPERM, errno.EEXIST}),
]


@pytest.mark.parametrize(("what", "action", "codes"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_gets_an_errno_and_the_mount_stays_up(
        mnt: Path, what: str, action: Callable[[Path], object], codes: set[int]) -> None:
    (mnt / "unpaywall" / "W1").mkdir(parents=True)
    assert errno_of(lambda: action(mnt)) in codes, what
    (mnt / "unpaywall" / "W1" / "after.txt").write_bytes(b"still up")
    assert (mnt / "unpaywall" / "W1" / "after.txt").read_bytes() == b"still up"
    assert os.listdir(mnt / "unpaywall" / "W1") == ["after.txt"]


def test_two_writers_of_the_same_bytes_leave_one_blob_and_two_records(
        mnt: Path, mounter: Mounter) -> None:
    data = os.urandom(8 << 20)
    d = mnt / "unpaywall" / "W1"
    d.mkdir(parents=True)
    barrier = threading.Barrier(2)

    def write(name: str) -> None:
        with (d / name).open("wb") as f:
            barrier.wait()
            for offset in range(0, len(data), 1 << 20):
                f.write(data[offset:offset + (1 << 20)])

    threads = [threading.Thread(target=write, args=(n,)) for n in ("one.bin", "two.bin")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    digest = hashlib.sha256(data).hexdigest()
    for name in ("one.bin", "two.bin"):
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest
    with Store.open(mounter.store_path, readonly=True) as store:
        stats = store.catalog.stats()
        assert store.catalog.blob_refcount(digest) == 2
    assert (stats["documents"], stats["blobs"]) == (2, 1)
    assert [p for p in (mounter.store_path / "cas").rglob("*") if p.is_file()] == [
        mounter.store_path / "cas/sha256" / digest[:2] / digest[2:]]


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    """A store on a 4 MiB tmpfs."""
    fs = tmp_path / "small"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(fs)], check=True)
    try:
        Store.init(fs / "store").close()
        yield fs / "store"
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


@needs_root
def test_a_full_filesystem_gives_the_writer_an_error_and_leaves_nothing(
        small_store: Path, tmp_path: Path) -> None:
    mounter = Mounter(small_store, tmp_path / "mnt")
    try:
        mnt = mounter.mount()
        d = mnt / "unpaywall" / "W1"
        d.mkdir(parents=True)
        (d / "small.txt").write_bytes(b"fits")

        def fill() -> None:
            with (d / "big.bin").open("wb") as f:
                for _ in range(16):
                    f.write(os.urandom(1 << 20))

        assert errno_of(fill) in (errno.ENOSPC, errno.EIO)
        assert not (d / "big.bin").exists()
        assert os.listdir(d) == ["small.txt"]
        (d / "after.txt").write_bytes(b"ok")  # the mount is still up
    finally:
        mounter.cleanup()
    with Store.open(small_store, readonly=True) as store:
        assert store.catalog.stats()["documents"] == 2
        for doc in store.catalog.iter_live_documents():
            assert store.blobs.has(doc.sha256)
    blobs = [p for p in (small_store / "cas").rglob("*") if p.is_file()]
    assert len(blobs) == 2 and all(p.stat().st_size <= 4 for p in blobs)
    assert list((small_store / "tmp").iterdir()) == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_ls_l_asks_foreign_attributes_once_not_per_entry(mnt: Path, tmp_path: Path) -> None:
    """`ls -l` asks each entry for its SELinux label and its ACL unless the device
    said ENOTSUP once; ENODATA would cost two round trips per entry (README,
    Performance)."""
    d = mnt / "r" / "a"
    d.mkdir(parents=True)
    for i in range(40):
        (d / f"f{i:02}.txt").write_bytes(b"%d" % i)
    trace = tmp_path / "ls.strace"
    listing = subprocess.run(["strace", "-f", "-e", "trace=getxattr,lgetxattr", "-o", str(trace),
                              "ls", "-l", str(d)], capture_output=True, text=True,
                             check=True).stdout
    lines = [line for line in listing.splitlines() if ".txt" in line]
    assert len(lines) == 40 and all(line.startswith("-rw-") for line in lines)
    calls = trace.read_text()
    assert 1 <= calls.count("security.selinux") <= 2, calls
    assert 1 <= calls.count("system.posix_acl_access") <= 2, calls
    assert os.getxattr(d / "f07.txt", "user.casfs.resolver") == b"r"


def test_noxattr_turns_extended_attributes_off(mounter: Mounter) -> None:
    mnt = mounter.mount()
    (mnt / "r" / "a").mkdir(parents=True)
    (mnt / "r" / "a" / "f.txt").write_bytes(b"x")
    mnt = mounter.remount("noxattr")
    path = mnt / "r" / "a" / "f.txt"
    assert errno_of(lambda: os.getxattr(path, "user.casfs.sha256")) == errno.EOPNOTSUPP
    assert errno_of(lambda: os.listxattr(path)) == errno.EOPNOTSUPP
    listing = subprocess.run(["ls", "-l", str(path.parent)], capture_output=True, text=True,
                             check=True).stdout
    assert "f.txt" in listing and path.read_bytes() == b"x"


def test_the_daemon_runs_from_the_root_not_from_where_mount_was_called(
        mounter: Mounter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m` looks for modules in the current directory first: a daemon started
    from a directory holding a `casfs/` of its own ran that code (as root, for a mount
    run by root), and it kept that directory busy, so its filesystem could not be
    unmounted while the mount was up. The daemon starts in `/`."""
    elsewhere = tmp_path / "elsewhere"
    impostor = elsewhere / "casfs"
    impostor.mkdir(parents=True)
    ran = tmp_path / "impostor-ran"
    (impostor / "__init__.py").write_text(
        f"open({str(ran)!r}, 'w').close()\nraise SystemExit('not casfs')\n")
    monkeypatch.chdir(elsewhere)
    mnt = mounter.mount()
    (mnt / "unpaywall" / "W1").mkdir(parents=True)
    (mnt / "unpaywall" / "W1" / "a.txt").write_bytes(b"served")
    assert (mnt / "unpaywall" / "W1" / "a.txt").read_bytes() == b"served"
    assert not ran.exists()
    pid_file = next((mounter.store_path / "run").glob("mount-*.json"))
    pid = json.loads(pid_file.read_text())["pid"]
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
