"""The mount's semantics table: versions on overwrite, catalog-only renames and links,
directories, readers of open files, and changes made outside the mount."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casfs.mount.attributes import ABSENT_FOR_S
from casfs.store import Store
from casfs.tools import cli

from .conftest import ALL_BACKENDS, Mounter

pytestmark = ALL_BACKENDS


def artifact(mnt: Path, resolver: str = "unpaywall", name: str = "W1") -> Path:
    path = mnt / resolver / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def history(store_path: Path, rel: str) -> list[tuple[str, str | None]]:
    """[(sha256, change)] of every version of the file now at `rel`, read through a
    connection of its own (the catalog is shared with the mount through WAL)."""
    resolver, artifact_id, basename = rel.split("/")
    with Store.open(store_path, readonly=True) as store:
        directory = store.catalog.find_directory(resolver, artifact_id)
        assert directory is not None
        doc = store.catalog.lookup_document(directory, basename)
        assert doc is not None
        return [(d.sha256, d.change) for d in store.catalog.history(doc.ino)]


def test_o_trunc_overwrite_is_a_new_version_with_the_same_inode(mnt: Path,
                                                                 mounter: Mounter) -> None:
    path = artifact(mnt) / "a.txt"
    path.write_bytes(b"first version")
    ino = path.stat().st_ino
    path.write_bytes(b"second")
    assert path.read_bytes() == b"second"
    assert path.stat().st_ino == ino and path.stat().st_size == 6
    versions = history(mounter.store_path, "unpaywall/W1/a.txt")
    assert len(versions) == 2 and versions[0][1] == "overwrite" and versions[1][1] is None


def test_append_and_partial_writes_copy_on_write(mnt: Path, mounter: Mounter) -> None:
    path = artifact(mnt) / "log.txt"
    path.write_bytes(b"0123456789")
    old_blob = history(mounter.store_path, "unpaywall/W1/log.txt")[0][0]
    with path.open("ab") as f:
        f.write(b"abc")
    with path.open("r+b") as f:
        f.seek(2)
        f.write(b"XY")
    assert path.read_bytes() == b"01XY456789abc"
    with Store.open(mounter.store_path, readonly=True) as store:
        fd = store.blobs.open_blob(old_blob)
        try:
            assert os.pread(fd, 100, 0) == b"0123456789"  # law 1: the old blob never changed
        finally:
            os.close(fd)
    os.truncate(path, 4)
    assert path.read_bytes() == b"01XY"


def test_readers_of_an_open_file_see_its_bytes(mnt: Path) -> None:
    path = artifact(mnt) / "growing.bin"
    with path.open("wb") as writer:
        writer.write(b"partial")
        writer.flush()
        assert path.read_bytes() == b"partial"
        assert path.stat().st_size == 7
        assert path.name in os.listdir(path.parent)
    assert path.read_bytes() == b"partial"


def test_rename_unlink_and_link_are_catalog_operations(mnt: Path, mounter: Mounter) -> None:
    a = artifact(mnt) / "a.pdf"
    a.write_bytes(b"A" * 5000)
    blobs_before = sorted((mounter.store_path / "cas").rglob("*"))
    b = artifact(mnt, "arxiv", "W2") / "b.pdf"
    os.rename(a, b)
    assert not a.exists() and b.read_bytes() == b"A" * 5000
    os.link(b, artifact(mnt) / "again.pdf")
    assert (artifact(mnt) / "again.pdf").read_bytes() == b"A" * 5000
    os.unlink(b)
    assert not b.exists() and (artifact(mnt) / "again.pdf").exists()
    assert sorted((mounter.store_path / "cas").rglob("*")) == blobs_before
    with Store.open(mounter.store_path, readonly=True) as store:
        stats = store.catalog.stats()
    assert stats["documents"] == 1 and stats["blobs"] == 1


def test_rename_over_an_existing_file_replaces_it(mnt: Path) -> None:
    d = artifact(mnt)
    (d / "old.txt").write_bytes(b"old")
    (d / "new.txt").write_bytes(b"new")
    os.rename(d / "new.txt", d / "old.txt")
    assert (d / "old.txt").read_bytes() == b"new"
    assert sorted(os.listdir(d)) == ["old.txt"]


def test_directories_mkdir_rmdir_and_rename(mnt: Path) -> None:
    d = artifact(mnt, "crossref", "10.1234%2Fabc")
    (d / "x.txt").write_bytes(b"x")
    with pytest.raises(OSError) as info:
        os.rmdir(d)
    assert info.value.errno == errno.ENOTEMPTY
    os.rename(d, mnt / "crossref" / "W77")
    assert (mnt / "crossref" / "W77" / "x.txt").read_bytes() == b"x"
    assert os.getxattr(mnt / "crossref" / "W77" / "x.txt",
                       "user.casfs.artifact_id") == b"W77"
    os.unlink(mnt / "crossref" / "W77" / "x.txt")
    os.rmdir(mnt / "crossref" / "W77")
    assert os.listdir(mnt / "crossref") == []


def test_an_identifier_with_a_slash_gets_an_escaped_directory(mnt: Path, tmp_path: Path,
                                                              mounter: Mounter) -> None:
    src = tmp_path / "paper.pdf"
    src.write_bytes(b"doi paper")
    assert cli.main(["--store", str(mounter.store_path), "put", str(src), "--resolver",
                     "crossref", "--artifact", "10.1234/oa.5678"]) == 0
    path = mnt / "crossref" / "10.1234%2Foa.5678" / "paper.pdf"
    assert path.read_bytes() == b"doi paper"
    assert os.getxattr(path, "user.casfs.artifact_id") == b"10.1234/oa.5678"


def test_a_large_directory_lists_every_entry_once(mnt: Path, mounter: Mounter) -> None:
    from casfs.records import NewDocument

    count = 1234  # more than two readdir pages
    with Store.open(mounter.store_path) as store:
        for i in range(count):
            store.catalog.register(NewDocument(
                resolver="bulk", artifact_id="W1", basename=f"f{i:05}.txt",
                sha256=f"{i:064x}", bytes=1, storage_uri="file:///none",
                source_url=f"https://x/{i}"))
    names = os.listdir(mnt / "bulk" / "W1")
    assert len(names) == count and len(set(names)) == count
    listing = subprocess.run(["ls", "-l", str(mnt / "bulk" / "W1")], check=True,
                             capture_output=True, text=True).stdout
    assert len(listing.splitlines()) == count + 1


def test_outside_changes_show_within_the_cache_timeout(mounter: Mounter,
                                                       tmp_path: Path) -> None:
    mnt = mounter.mount("cache_timeout=1")
    src = tmp_path / "paper.pdf"
    src.write_bytes(b"version one")
    put = ["--store", str(mounter.store_path), "put", "--resolver", "unpaywall",
           "--artifact", "W1", "--source-url", "https://x/paper.pdf"]
    assert cli.main([*put[:3], str(src), *put[3:]]) == 0
    path = mnt / "unpaywall" / "W1" / "paper.pdf"
    assert path.read_bytes() == b"version one"
    src.write_bytes(b"version two, longer")
    assert cli.main([*put[:3], str(src), *put[3:]]) == 0
    deadline = time.monotonic() + 5
    while path.read_bytes() != b"version two, longer":
        assert time.monotonic() < deadline, "outside change did not show within 5 s"
        time.sleep(0.2)
    with Store.open(mounter.store_path) as store:
        doc = store.catalog.lookup_document(
            store.catalog.ensure_directory("unpaywall", "W1"), "paper.pdf")
        assert doc is not None
        store.catalog.unlink_document(doc.ino)
    while path.exists():
        assert time.monotonic() < deadline + 5, "outside delete did not show"
        time.sleep(0.2)


def test_a_name_found_absent_is_remembered_a_moment_only(mounter: Mounter,
                                                         tmp_path: Path) -> None:
    """The kernel keeps a lookup's "absent" in an artifact directory for a moment
    (`cp` looks a new name up three times), far less than the cache timeout: a file
    put there from outside shows within that moment, one made through the mount at
    once; a new resolver (no name is kept absent outside artifact directories) at
    once too."""
    mnt = mounter.mount("cache_timeout=60")
    (mnt / "unpaywall" / "W1").mkdir(parents=True)
    late = mnt / "unpaywall" / "W1" / "late.pdf"
    assert not late.exists()
    src = tmp_path / "late.pdf"
    src.write_bytes(b"put from outside")
    put = ["--store", str(mounter.store_path), "put", str(src), "--resolver", "unpaywall",
           "--artifact", "W1"]
    assert cli.main(put) == 0
    deadline = time.monotonic() + ABSENT_FOR_S + 3
    while not late.exists():
        assert time.monotonic() < deadline, "a name made outside stayed unseen"
        time.sleep(0.1)
    assert late.read_bytes() == b"put from outside"
    mine = mnt / "unpaywall" / "W1" / "mine.pdf"
    assert not mine.exists()
    mine.write_bytes(b"made here")
    assert mine.read_bytes() == b"made here"
    resolver = mnt / "arxiv"
    assert not resolver.exists()
    assert cli.main([*put[:4], "--resolver", "arxiv", "--artifact", "2401.00001"]) == 0
    assert (resolver / "2401.00001" / "late.pdf").read_bytes() == b"put from outside"


@pytest.mark.parametrize("make", ["rename", "link"])
def test_a_name_found_absent_then_made_here_is_there_for_an_exclusive_create(
        mnt: Path, make: str) -> None:
    """The mount answers a lookup from the one just before it (`cp`'s stat, then
    its O_EXCL open, which the kernel always looks up again): a name this mount made
    meanwhile by a rename or a link must not be answered absent, or the exclusive
    create would replace it."""
    source = artifact(mnt) / "source.txt"
    source.write_bytes(b"the first file")
    name = artifact(mnt) / "new.txt"
    assert not name.exists()
    if make == "rename":
        os.rename(source, name)
    else:
        os.link(source, name)
    with pytest.raises(FileExistsError):
        os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    assert name.read_bytes() == b"the first file"


def test_umount_waits_for_the_daemon(mnt: Path, mounter: Mounter) -> None:
    (artifact(mnt) / "a.txt").write_bytes(b"a")
    mounter.umount()
    assert not list((mounter.store_path / "run").iterdir())  # the daemon removed its pid file
    code = subprocess.run([sys.executable, "-m", "casfs.tools", "umount", str(mnt)],
                          capture_output=True, text=True)
    assert code.returncode == 2 and "not a casfs mount" in code.stderr


def test_a_set_content_type_survives_new_versions(mnt: Path) -> None:
    path = artifact(mnt) / "data.txt"
    path.write_bytes(b"one")
    assert os.getxattr(path, "user.casfs.content_type") == b"text/plain"
    os.setxattr(path, "user.casfs.content_type", b"application/x-ndjson")
    with path.open("ab") as f:
        f.write(b" two")
    path.write_bytes(b"three")
    assert os.getxattr(path, "user.casfs.content_type") == b"application/x-ndjson"


def test_one_open_file_makes_one_version(mnt: Path, mounter: Mounter) -> None:
    """A shell redirection closes a duplicated descriptor before writing; fsync
    finalizes too. Each close is durable, but history keeps one version per open."""
    path = artifact(mnt) / "log.txt"
    subprocess.run(["bash", "-c", f"echo first > '{path}'"], check=True)
    assert path.read_bytes() == b"first\n"
    with path.open("ab") as f:
        f.write(b"second\n")
        f.flush()
        os.fsync(f.fileno())
        f.write(b"third\n")
    assert path.read_bytes() == b"first\nsecond\nthird\n"
    versions = history(mounter.store_path, "unpaywall/W1/log.txt")
    assert len(versions) == 2 and versions[0][1] == "overwrite"


@pytest.mark.parametrize("durability", ["close", "batch"])
def test_files_after_dedup_hits_hold_only_their_own_bytes(mounter: Mounter, backend: str,
                                                          durability: str) -> None:
    """A dedup hit's staging file is emptied and used again for a later create
    (mount/staging_reserve.py): every later file, shorter or longer, reads back its
    own bytes and is stored under its own hash; the blob the hits matched is whole."""
    if durability == "batch" and backend != "sqlite":
        pytest.skip("a bulk load needs the embedded catalog and local blobs")
    mnt = mounter.mount(f"durability={durability}")
    first = artifact(mnt, name="W1")
    long = os.urandom(9000)
    for i in range(24):  # the first is new; the others are dedup hits
        (first / f"copy{i}.bin").write_bytes(long)
    later = artifact(mnt, name="W2")
    payloads = {f"f{i}.bin": os.urandom(100 + 700 * i) for i in range(24)}
    for name, data in payloads.items():
        (later / name).write_bytes(data)
    metrics = (mnt / ".casfs" / "metrics").read_text()
    reused = re.search(r"^casfs_mount_staging_reused (\d+)", metrics, re.M)
    assert reused is not None and int(reused.group(1)) >= 1, metrics
    mounter.umount()
    mounted = mounter.mount()
    for name, data in payloads.items():
        assert (mounted / "unpaywall" / "W2" / name).read_bytes() == data, name
    assert all((mounted / "unpaywall" / "W1" / f"copy{i}.bin").read_bytes() == long
               for i in range(24))
    with Store.open(mounter.store_path, readonly=True) as store:
        directory = store.catalog.find_directory("unpaywall", "W2")
        assert directory is not None
        for name, data in payloads.items():
            doc = store.catalog.lookup_document(directory, name)
            assert doc is not None and doc.sha256 == hashlib.sha256(data).hexdigest()
