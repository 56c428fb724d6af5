"""The file-system exerciser (tests/fsx.py) on a real mount, with and without mmap.

CASFS_FSX_OPS sets the operations per run (default 2,000 here; the README gives
the long run), CASFS_FSX_MAX_LEN the largest file (default 256 KiB; above 8 MiB a
blob in S3 is read while it arrives). After each run the mount is remounted and the stored file must
equal the model: the bytes were stored right, and read right.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import ALL_BACKENDS, Mounter
from .fsx import Exerciser

OPS = int(os.environ.get("CASFS_FSX_OPS", "2000"))
MAX_LEN = int(os.environ.get("CASFS_FSX_MAX_LEN", str(256 * 1024)))


@ALL_BACKENDS
@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "no-mmap"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_read_what_the_model_says(mounter: Mounter, seed: int,
                                                    use_mmap: bool) -> None:
    mnt = mounter.mount()
    directory = mnt / "fsx" / f"run{seed}"
    directory.mkdir(parents=True)
    path = directory / "file.bin"
    expected = Exerciser(path, seed, use_mmap, max_len=MAX_LEN).run(OPS)
    assert path.read_bytes() == expected
    mnt = mounter.remount()
    assert (mnt / "fsx" / f"run{seed}" / "file.bin").read_bytes() == expected


@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "no-mmap"])
def test_a_bulk_load_reads_what_the_model_says(mounter: Mounter, use_mmap: bool) -> None:
    """The same in a bulk load (-o durability=batch), where a close places its blob in
    the registration's round; then a remount after the last round."""
    mnt = mounter.mount("durability=batch", "durability_interval=0.2")
    directory = mnt / "fsx" / "bulk"
    directory.mkdir(parents=True)
    path = directory / "file.bin"
    expected = Exerciser(path, 4, use_mmap, max_len=MAX_LEN).run(OPS)
    assert path.read_bytes() == expected
    mnt = mounter.remount()
    assert (mnt / "fsx" / "bulk" / "file.bin").read_bytes() == expected


def test_the_exerciser_agrees_with_a_local_disk(tmp_path: Path) -> None:
    """The model itself is right: on the local filesystem every run passes."""
    path = tmp_path / "file.bin"
    assert path.parent.is_dir()
    expected = Exerciser(path, 7, True).run(3000)
    assert path.read_bytes() == expected
