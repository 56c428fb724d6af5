"""Time travel through real mounts: a scripted history is made through a live mount,
the tree it shows is noted after each step with the time, and a mount of each noted
moment (`casfs mount --at`) shows exactly that tree, with the bytes of then, and
refuses every write."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import pytest

from casfs.moments import format_moment
from casfs.tools import cli

from .conftest import BOTH_CATALOGS, Mounter

pytestmark = BOTH_CATALOGS


def tree(root: Path) -> dict[str, str | None]:
    """Every directory (None) and file (the SHA-256 of its bytes) under a mount."""
    found: dict[str, str | None] = {}
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            found[os.path.relpath(os.path.join(directory, name), root)] = None
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


def test_a_mount_of_each_past_moment_shows_the_tree_of_then(mounter: Mounter,
                                                             tmp_path: Path) -> None:
    mnt = mounter.mount()
    moments: list[tuple[float, dict[str, str | None]]] = []

    def note() -> None:
        time.sleep(0.01)
        moments.append((time.time(), tree(mnt)))
        time.sleep(0.01)

    note()  # nothing yet
    (mnt / "unpaywall" / "W1").mkdir(parents=True)
    (mnt / "unpaywall" / "W1" / "a.pdf").write_bytes(b"first bytes")
    note()
    (mnt / "unpaywall" / "W1" / "a.pdf").write_bytes(b"second bytes")  # overwrite
    note()
    (mnt / "unpaywall" / "W1" / "a.pdf").rename(mnt / "unpaywall" / "W1" / "b.pdf")
    note()
    (mnt / "unpaywall" / "W1").rename(mnt / "unpaywall" / "W2")  # a directory rename
    note()
    os.setxattr(mnt / "unpaywall" / "W2" / "b.pdf", "user.casfs.content_type",
                b"application/pdf")  # metadata
    note()
    (mnt / "unpaywall" / "W2" / "b.pdf").unlink()
    note()
    (mnt / "unpaywall" / "W2" / "b.pdf").write_bytes(b"third bytes")  # the name again
    (mnt / "arxiv" / "X1").mkdir(parents=True)
    note()
    (mnt / "arxiv" / "X1").rmdir()
    note()

    past = Mounter(mounter.store_path, tmp_path / "past")
    try:
        for moment, expected in moments:
            view = past.mount(f"at={format_moment(moment)}")
            assert tree(view) == expected, format_moment(moment)
            past.umount()
        view = past.mount(f"at={format_moment(moments[2][0])}")
        with pytest.raises(OSError) as info:
            (view / "unpaywall" / "W1" / "a.pdf").write_bytes(b"rewriting history")
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            (view / "unpaywall" / "W9").mkdir()
        assert info.value.errno == errno.EROFS
    finally:
        past.cleanup()
    assert tree(mnt) == moments[-1][1]  # the present is untouched


def test_a_moment_that_is_not_one_is_refused_with_its_name(mounter: Mounter,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    mounter.mountpoint.mkdir(exist_ok=True)
    for when, message in (("yesterday", "not a moment"), ("2999-01-01", "in the future")):
        code = cli.main(["--store", str(mounter.store_path), "mount",
                         str(mounter.mountpoint), "--at", when])
        assert code != 0
        assert message in capsys.readouterr().err
        assert not os.path.ismount(mounter.mountpoint)
