"""Snapshots: a named moment is mounted as it was, and gc keeps exactly the blobs
its documents use, whatever the retention window, until it is deleted."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from casfs.moments import format_moment
from casfs.store import Store

from .conftest import BOTH_CATALOGS, Mounter

pytestmark = BOTH_CATALOGS


def casfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), *args],
                          capture_output=True, text=True, check=False)


def put(store: Path, tmp_path: Path, name: str, data: bytes, url: str) -> str:
    source = tmp_path / "src" / name
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(data)
    done = casfs(store, "put", str(source), "--resolver", "unpaywall", "--artifact", "W1",
                 "--source-url", url)
    assert done.returncode == 0, done.stderr
    return hashlib.sha256(data).hexdigest()


def test_gc_keeps_what_a_snapshot_uses_until_it_is_deleted(mounter: Mounter,
                                                           tmp_path: Path) -> None:
    store = mounter.store_path
    old = put(store, tmp_path, "a.pdf", b"a, as the snapshot saw it", "https://x/a")
    gone = put(store, tmp_path, "c.pdf", b"c, deleted before the snapshot", "https://x/c")
    with Store.open(store) as opened:
        doc = opened.catalog.resolve_path("/unpaywall/W1/c.pdf")
        assert doc is not None
        opened.catalog.unlink_document(doc.ino)
    time.sleep(0.01)
    made = casfs(store, "snapshot", "create", "paper-1", "--note", "the submitted run",
                 "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["blobs"] == 1
    time.sleep(0.01)
    new = put(store, tmp_path, "a.pdf", b"a, rewritten after", "https://x/a")

    gc = ["gc", "--grace", "0", "--keep-history", "0", "--json"]
    preview = json.loads(casfs(store, *gc).stdout)
    assert [g["sha256"] for g in preview["garbage"]] == [gone]
    assert preview["kept_by_snapshots"] == [{"snapshot": "paper-1", "blobs": 1,
                                             "bytes": len(b"a, as the snapshot saw it")}]
    applied = json.loads(casfs(store, *gc, "--apply").stdout)
    assert applied["removed"] == 1
    with Store.open(store) as opened:
        assert not opened.blobs.has(gone)
        assert opened.blobs.has(old) and opened.blobs.has(new)

    view = mounter.mountpoint
    assert casfs(store, "mount", str(view), "--at", "paper-1").returncode == 0
    data = (view / "unpaywall" / "W1" / "a.pdf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == old
    assert not (view / "unpaywall" / "W1" / "c.pdf").exists()
    mounter.umount()

    listed = json.loads(casfs(store, "snapshot", "list", "--json").stdout)
    assert [(s["name"], s["note"], s["blobs"]) for s in listed] == [
        ("paper-1", "the submitted run", 1)]
    assert casfs(store, "snapshot", "delete", "paper-1").returncode == 0
    again = json.loads(casfs(store, *gc, "--apply").stdout)
    assert [g["sha256"] for g in again["garbage"]] == [old]
    assert again["kept_by_snapshots"] == []
    with Store.open(store) as opened:
        assert not opened.blobs.has(old) and opened.blobs.has(new)


def test_snapshot_names_are_checked(store_path: Path) -> None:
    assert casfs(store_path, "snapshot", "create", "one").returncode == 0
    taken = casfs(store_path, "snapshot", "create", "one")
    assert taken.returncode != 0 and "exists" in taken.stderr
    for bad, says in (("3d", "reads as a time"), ("no/slash", "not a snapshot name"),
                      ("-x", "not a snapshot name")):
        done = casfs(store_path, "snapshot", "create", "--", bad)
        assert done.returncode != 0 and says in done.stderr, (bad, done.stderr)
    future = casfs(store_path, "snapshot", "create", "later", "--at", "2999-01-01")
    assert future.returncode != 0 and "future" in future.stderr
    assert casfs(store_path, "snapshot", "create", "same", "--at", "one").returncode == 0
    listed = json.loads(casfs(store_path, "snapshot", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["one", "same"] and listed[0]["at"] == listed[1]["at"]
    missing = casfs(store_path, "snapshot", "delete", "nothing")
    assert missing.returncode == 1 and "no snapshot named 'nothing'" in missing.stderr


def test_diff_names_what_changed_between_two_moments(store_path: Path, tmp_path: Path) -> None:
    a = put(store_path, tmp_path, "a.pdf", b"a one", "https://x/a")
    put(store_path, tmp_path, "gone.pdf", b"to be removed", "https://x/gone")
    put(store_path, tmp_path, "moved.pdf", b"to be renamed", "https://x/moved")
    assert casfs(store_path, "snapshot", "create", "before").returncode == 0
    time.sleep(0.01)
    a2 = put(store_path, tmp_path, "a.pdf", b"a two", "https://x/a")
    put(store_path, tmp_path, "new.pdf", b"added", "https://x/new")
    with Store.open(store_path) as opened:
        catalog = opened.catalog
        gone = catalog.resolve_path("/unpaywall/W1/gone.pdf")
        moved = catalog.resolve_path("/unpaywall/W1/moved.pdf")
        assert gone is not None and moved is not None
        catalog.unlink_document(gone.ino)
        catalog.rename_document(moved.ino, catalog.directory_of(moved), "renamed.pdf",
                                replace=False)
    text = casfs(store_path, "diff", "before", "now")
    assert text.returncode == 1  # something changed, as diff(1) says
    assert sorted(text.stdout.splitlines()) == sorted([
        f"M /unpaywall/W1/a.pdf\t{a[:12]} -> {a2[:12]}",
        "- /unpaywall/W1/gone.pdf",
        "R /unpaywall/W1/moved.pdf -> /unpaywall/W1/renamed.pdf",
        "+ /unpaywall/W1/new.pdf"])
    as_json = json.loads(casfs(store_path, "diff", "before", "now", "--json").stdout)
    assert {(d["kind"], d["path"]) for d in as_json} == {
        ("changed", "/unpaywall/W1/a.pdf"), ("removed", "/unpaywall/W1/gone.pdf"),
        ("renamed", "/unpaywall/W1/renamed.pdf"), ("added", "/unpaywall/W1/new.pdf")}
    same = casfs(store_path, "diff", "now", "now", "--json")
    assert same.returncode == 0 and json.loads(same.stdout) == []
    bad = casfs(store_path, "diff", "before", "never")
    assert bad.returncode == 2 and "not a moment: 'never'" in bad.stderr


def test_a_moment_whose_bytes_gc_took_is_refused_unless_partial(mounter: Mounter,
                                                                tmp_path: Path) -> None:
    import errno

    import pytest

    store = mounter.store_path
    put(store, tmp_path, "a.pdf", b"a, soon overwritten", "https://x/a")
    kept = put(store, tmp_path, "b.pdf", b"b, kept", "https://x/b")
    time.sleep(0.01)
    then = f"@{time.time()!r}"
    time.sleep(0.01)
    put(store, tmp_path, "a.pdf", b"a, the new bytes", "https://x/a")
    gc = casfs(store, "gc", "--grace", "0", "--keep-history", "0", "--apply", "--json")
    assert json.loads(gc.stdout)["removed"] == 1
    with Store.open(store) as opened:
        closed = opened.catalog.history(opened.catalog.resolve_path(
            "/unpaywall/W1/a.pdf").ino)[0]  # type: ignore[union-attr]
    mountpoint = mounter.mountpoint
    refused = casfs(store, "mount", str(mountpoint), "--at", then)
    assert refused.returncode == 2
    assert "is not whole: 1 document(s)" in refused.stderr
    assert format_moment(closed.valid_to) in refused.stderr  # type: ignore[arg-type]
    assert "--partial" in refused.stderr
    assert casfs(store, "mount", str(mountpoint), "--at", then, "--partial").returncode == 0
    try:
        with pytest.raises(OSError) as info:
            (mountpoint / "unpaywall" / "W1" / "a.pdf").read_bytes()
        assert info.value.errno == errno.EIO
        data = (mountpoint / "unpaywall" / "W1" / "b.pdf").read_bytes()
        assert hashlib.sha256(data).hexdigest() == kept
    finally:
        mounter.umount()
    assert casfs(store, "mount", str(mountpoint), "--at", "now").returncode == 0  # whole
    mounter.umount()
    late = casfs(store, "snapshot", "create", "too-late", "--at", then, "--json")
    assert late.returncode == 0 and json.loads(late.stdout)["lost"] == 1
    assert "1 document(s) live at" in late.stderr and "already lost" in late.stderr


def test_a_live_mount_shows_each_snapshot_read_only_under_casfs_snapshots(
        mounter: Mounter) -> None:
    import errno
    import os

    import pytest

    mnt = mounter.mount()
    (mnt / "unpaywall" / "W1").mkdir(parents=True)
    (mnt / "unpaywall" / "W1" / "a.pdf").write_bytes(b"a as it was")
    assert casfs(mounter.store_path, "snapshot", "create", "first").returncode == 0
    time.sleep(0.01)
    (mnt / "unpaywall" / "W1" / "a.pdf").write_bytes(b"a as it is")
    (mnt / "unpaywall" / "W1").rename(mnt / "unpaywall" / "W2")
    (mnt / "unpaywall" / "W2" / "b.pdf").write_bytes(b"made later")
    assert casfs(mounter.store_path, "snapshot", "create", "second").returncode == 0

    snapshots = mnt / ".casfs" / "snapshots"
    assert sorted(os.listdir(snapshots)) == ["first", "second"]
    assert "snapshots" in os.listdir(mnt / ".casfs")
    first, second = snapshots / "first", snapshots / "second"
    assert sorted(os.listdir(first / "unpaywall")) == ["W1"]
    assert (first / "unpaywall" / "W1" / "a.pdf").read_bytes() == b"a as it was"
    assert sorted(os.listdir(second / "unpaywall" / "W2")) == ["a.pdf", "b.pdf"]
    assert (second / "unpaywall" / "W2" / "a.pdf").read_bytes() == b"a as it is"
    assert (mnt / "unpaywall" / "W2" / "a.pdf").read_bytes() == b"a as it is"
    assert not os.path.exists(first / ".casfs")
    # the same document at two moments: two inodes, so no cached page is shared
    assert os.stat(first / "unpaywall" / "W1" / "a.pdf").st_ino != \
        os.stat(mnt / "unpaywall" / "W2" / "a.pdf").st_ino
    assert os.getxattr(first / "unpaywall" / "W1" / "a.pdf", "user.casfs.sha256") == \
        hashlib.sha256(b"a as it was").hexdigest().encode()
    walked = sorted(os.path.relpath(os.path.join(d, f), first)
                    for d, _, files in os.walk(first) for f in files)
    assert walked == ["unpaywall/W1/a.pdf"]
    for attempt in (lambda: (first / "unpaywall" / "W1" / "a.pdf").write_bytes(b"x"),
                    lambda: (first / "unpaywall" / "W1" / "new.pdf").write_bytes(b"x"),
                    lambda: (first / "unpaywall" / "W9").mkdir(),
                    lambda: (first / "unpaywall" / "W1" / "a.pdf").unlink(),
                    lambda: (snapshots / "third").mkdir()):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    assert not (snapshots / "nothing").exists()
    mounter.umount()
