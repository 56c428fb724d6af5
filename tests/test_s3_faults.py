"""When the object store stops answering: a copy into the mount fails within the
bound (CASFS_S3_TIMEOUT), nothing is registered, the mount stays up, and the same
copy works once the store is back. SIGSTOP, so the server neither answers nor
closes its connections."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from casfs.store import Store

from .conftest import Mounter
from .s3 import S3Server

TIMEOUT_S = 2


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_a_copy_while_the_store_is_down_fails_in_time_and_works_after(
        mounter: Mounter, s3_env: S3Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASFS_S3_TIMEOUT", str(TIMEOUT_S))
    mnt = mounter.mount()
    (mnt / "r" / "A").mkdir(parents=True)
    source = tmp_path / "paper.pdf"
    source.write_bytes(b"%PDF " + b"x" * 200_000)
    target = mnt / "r" / "A" / "paper.pdf"
    s3_env.pause()
    try:
        started = time.monotonic()
        result = subprocess.run(["cp", str(source), str(target)], capture_output=True,
                                text=True, timeout=120)
        took = time.monotonic() - started
    finally:
        s3_env.resume()
    assert result.returncode != 0, "cp succeeded while the store was down"
    assert took < 6 * TIMEOUT_S + 5, f"cp took {took:.1f} s"
    with Store.open(mounter.store_path, readonly=True) as store:
        assert store.catalog.stats()["documents"] == 0  # nothing registered
    assert (mnt / "r").is_dir()  # the mount is up
    assert list((mounter.store_path / "tmp").iterdir()) == []  # no staging leaked
    subprocess.run(["cp", str(source), str(target)], check=True, timeout=60)
    assert target.read_bytes() == source.read_bytes()
