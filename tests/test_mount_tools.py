"""Ordinary tools against a real mount: cp, cp -r, rsync -a, tar -x; dedup; remount."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from casfs.store import Store
from casfs.tools import cli

from .conftest import Mounter, needs_root, sha256_of


def make_tree(root: Path) -> dict[str, bytes]:
    """A resolver/artifact tree of a few files, returned as {relative path: bytes}."""
    files = {
        "unpaywall/W4415231876/paper.pdf": b"%PDF-1.7\n" + os.urandom(300_000),
        "unpaywall/W4415231876/landing.html": b"<html>landing</html>\n",
        "unpaywall/W4415231877/survey.pdf": b"%PDF-1.4\n" + os.urandom(2_500_000),
        "crossref/W4415231878/empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def assert_tree(mnt: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (mnt / rel).read_bytes() == data, rel
        assert (mnt / rel).stat().st_size == len(data)


def catalog_stats(store_path: Path) -> dict[str, int]:
    with Store.open(store_path, readonly=True) as store:
        return store.catalog.stats()


def test_cp_of_single_files_and_cp_r_of_a_tree(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    (mnt / "unpaywall" / "W1").mkdir(parents=True)
    subprocess.run(["cp", str(src / "unpaywall/W4415231876/paper.pdf"),
                    str(mnt / "unpaywall/W1/")], check=True)
    assert sha256_of(mnt / "unpaywall/W1/paper.pdf") == \
        sha256_of(src / "unpaywall/W4415231876/paper.pdf")
    for resolver in ("unpaywall", "crossref"):
        subprocess.run(["cp", "-r", str(src / resolver), str(mnt)], check=True)
    assert_tree(mnt, files)
    listing = sorted(os.listdir(mnt / "unpaywall"))
    assert listing == ["W1", "W4415231876", "W4415231877"]


def test_rsync_a_uses_temp_files_and_renames(mnt: Path, tmp_path: Path,
                                              mounter: Mounter) -> None:
    if not shutil.which("rsync"):
        pytest.skip("rsync is not installed (apt-get install rsync)")
    src = tmp_path / "src"
    files = make_tree(src)
    os.utime(src / "unpaywall/W4415231876/paper.pdf", (1_600_000_000, 1_600_000_000))
    subprocess.run(["rsync", "-a", f"{src}/", f"{mnt}/"], check=True)
    assert_tree(mnt, files)
    assert (mnt / "unpaywall/W4415231876/paper.pdf").stat().st_mtime == 1_600_000_000
    assert not [p for p in (mnt / "unpaywall/W4415231876").iterdir() if p.name.startswith(".")]
    # A second rsync finds nothing to copy: sizes and times were kept.
    out = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", f"{mnt}/"],
                         check=True, capture_output=True, text=True).stdout
    assert not [line for line in out.splitlines() if line.startswith(">f")]
    assert catalog_stats(mounter.store_path)["documents"] == len(files)


def test_tar_x_into_the_mount(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    archive = tmp_path / "runs.tar"
    with tarfile.open(archive, "w") as tar:
        for rel in files:
            tar.add(src / rel, arcname=rel)
    subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(mnt)], check=True)
    assert_tree(mnt, files)


def test_three_copies_are_one_blob_and_three_documents(mnt: Path, tmp_path: Path,
                                                       mounter: Mounter) -> None:
    data = os.urandom(1_000_000)
    src = tmp_path / "same.pdf"
    src.write_bytes(data)
    for rel in ("unpaywall/W1/a.pdf", "crossref/W1/a.pdf", "unpaywall/W2/copy.pdf"):
        (mnt / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, mnt / rel)
    stats = catalog_stats(mounter.store_path)
    assert (stats["documents"], stats["blobs"]) == (3, 1)
    assert stats["physical_bytes"] == len(data) and stats["logical_bytes"] == 3 * len(data)
    blobs = list((mounter.store_path / "cas" / "sha256").rglob("*/*"))
    assert [b for b in blobs if b.is_file()] == [
        mounter.store_path / "cas/sha256" / sha256_of(src)[:2] / sha256_of(src)[2:]]


def test_data_and_names_survive_unmount_and_remount(mnt: Path, tmp_path: Path,
                                                    mounter: Mounter) -> None:
    src = tmp_path / "src"
    files = make_tree(src)
    subprocess.run(["cp", "-r", f"{src}/.", str(mnt)], check=True)
    (mnt / "arxiv" / "W-empty").mkdir(parents=True)
    before = {rel: sha256_of(mnt / rel) for rel in files}
    mounter.remount()
    assert {rel: sha256_of(mnt / rel) for rel in files} == before
    assert (mnt / "arxiv" / "W-empty").is_dir()
    mounter.remount("ro")
    assert_tree(mnt, files)


@needs_root
def test_the_mount_sets_its_readahead_window(mounter: Mounter) -> None:
    """-o readahead=SIZE (1 MiB by default) on the mount's own device; 0 leaves the
    kernel's 128 KiB."""
    from casfs.mount.readahead import device_of

    mnt = mounter.mount()
    knob = Path("/sys/class/bdi") / str(device_of(mnt)) / "read_ahead_kb"
    deadline = time.monotonic() + 10  # set by a thread once the mount answers
    while knob.read_text().strip() != "1024":
        assert time.monotonic() < deadline, knob.read_text()
        time.sleep(0.02)
    mounter.umount()
    mnt = mounter.mount("readahead=0")
    os.statvfs(mnt)
    time.sleep(0.2)
    knob = Path("/sys/class/bdi") / str(device_of(mnt)) / "read_ahead_kb"
    assert knob.read_text().strip() == "128"
    mounter.umount()
    assert cli.main(["--store", str(mounter.store_path), "mount", str(mnt), "-o",
                     "readahead=lots"]) == 2
