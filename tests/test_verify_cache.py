"""`casfs verify --cache`: every copy in this host's read cache hashed again, whatever
its stamp says, so that what a stamp cannot see (a change beneath the filesystem)
is still found; a damaged copy is dropped and fetched again at its next read, and
the object in the store is not touched. A store whose blobs are local has no cache
to check: a clear error, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from casfs.ingest import ingest_file
from casfs.store import Store


def casfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", *args], capture_output=True,
                          text=True, env=dict(os.environ), check=False)


def read_blob(store: Store, sha256: str) -> bytes:
    fd = store.blobs.open_blob(sha256)
    try:
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_a_copy_damaged_beneath_its_stamp_is_found_dropped_and_fetched_again(
        store_path: Path, tmp_path: Path) -> None:
    contents = {name: os.urandom(50_000) for name in ("a.bin", "b.bin", "c.bin")}
    shas = {}
    with Store.open(store_path) as store:
        for name, data in contents.items():
            src = tmp_path / name
            src.write_bytes(data)
            shas[name] = ingest_file(store, src, resolver="r", artifact_id="W1",
                                     source_url=None, name=name).document.sha256
        cache = store.blobs.cache
        assert cache is not None
        damaged = cache.path(shas["b.bin"])
        damaged.chmod(0o644)
        damaged.write_bytes(b"rot" + contents["b.bin"][3:])
        # As a failing disk would leave it: bytes changed, the stamp as it was.
        cache._stamps.record(shas["b.bin"], damaged.stat())
    with Store.open(store_path) as store:  # the limit: the stamp is trusted
        assert read_blob(store, shas["b.bin"]) != contents["b.bin"]

    result = casfs("--store", str(store_path), "verify", "--cache", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert (report["checked"], report["ok"], report["failed"]) == (3, 2, 1)
    assert report["failures"] == [{
        "sha256": shas["b.bin"], "problem": "damaged-cached-copy", "actual_sha256": None,
        "paths": ["/r/W1/b.bin"], "quarantined_to": None}]
    assert not damaged.exists()

    result = casfs("--store", str(store_path), "verify", "--cache")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("checked 2 cached blobs")
    with Store.open(store_path) as store:  # fetched again from the store, untouched
        assert {name: read_blob(store, sha) for name, sha in shas.items()} == contents
    assert casfs("--store", str(store_path), "verify").returncode == 0  # the objects


def test_a_store_with_local_blobs_has_no_cache_to_check(store_path: Path) -> None:
    result = casfs("--store", str(store_path), "verify", "--cache")
    assert result.returncode == 2
    assert "keeps no read cache" in result.stderr and result.stdout == ""


def test_options_that_do_not_apply_to_the_cache_are_refused(store_path: Path) -> None:
    result = casfs("--store", str(store_path), "verify", "--cache", "--max-duration", "1m")
    assert result.returncode == 2 and "--max-duration" in result.stderr
    result = casfs("--store", str(store_path), "verify", "--cache", "--oldest", "3")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
