"""fsck finds each kind of problem it claims to (one test per kind) and repairs it;
a backup taken while a mount writes restores to a catalog that fsck passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from casfs import fsck
from casfs.ingest import ingest_file
from casfs.store import Store

from .conftest import Mounter


def casfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), *args],
                          capture_output=True, text=True, check=False)


@pytest.fixture
def populated(store_path: Path, tmp_path: Path) -> Path:
    for i in range(3):
        src = tmp_path / f"f{i}.pdf"
        src.write_bytes(f"document {i}".encode())
        with Store.open(store_path) as store:
            ingest_file(store, src, resolver="unpaywall", artifact_id=f"W{i}",
                        source_url=f"https://x/{i}")
    return store_path


def first_sha(store_path: Path) -> str:
    with Store.open(store_path, readonly=True) as store:
        return next(store.catalog.iter_live_documents()).sha256


def blob(store_path: Path, sha: str) -> Path:
    return store_path / "cas" / "sha256" / sha[:2] / sha[2:]


def sql(store_path: Path, statement: str, *args: object) -> None:
    with Store.open(store_path) as store:
        store.catalog.conn.execute("PRAGMA foreign_keys = OFF")
        store.catalog.conn.execute(statement, args)


def damage_missing_blob(s: Path) -> None:
    blob(s, first_sha(s)).unlink()


def damage_size(s: Path) -> None:
    sql(s, "UPDATE blobs SET bytes = bytes + 1 WHERE sha256 = ?", first_sha(s))


def damage_directory(s: Path) -> None:
    sql(s, "DELETE FROM directories WHERE artifact_id = 'W1'")


def damage_collision(s: Path) -> None:
    sql(s, "DROP INDEX documents_live_path")
    sql(s, "UPDATE documents SET basename = 'same.pdf', artifact_id = 'W0' "
           "WHERE artifact_id IN ('W0', 'W1')")


def damage_foreign_key(s: Path) -> None:
    sql(s, "INSERT INTO variants VALUES (1, 'html', 'file:///x', 1, NULL, ?)", "f" * 64)


def damage_stray(s: Path) -> None:
    import hashlib

    data = b"a blob nobody registered"
    sha = hashlib.sha256(data).hexdigest()
    blob(s, sha).parent.mkdir(exist_ok=True)
    blob(s, sha).write_bytes(data)
    blob(s, sha).chmod(0o444)  # as casfs writes them: only the missing row is wrong


def damage_bad_name(s: Path) -> None:
    (s / "cas" / "sha256" / "zz").mkdir()


def damage_writable(s: Path) -> None:
    blob(s, first_sha(s)).chmod(0o644)


def damage_staging(s: Path) -> None:
    (s / "tmp" / "999999999-abcdef.part").write_bytes(b"left behind")


KINDS: list[tuple[str, Callable[[Path], None], bool]] = [
    ("missing-blob", damage_missing_blob, True),
    ("size-mismatch", damage_size, True),
    ("invisible-record", damage_directory, True),
    ("path-collision", damage_collision, False),
    ("catalog-integrity", damage_foreign_key, False),
    ("stray-blob", damage_stray, True),
    ("bad-blob-name", damage_bad_name, True),
    ("blob-writable", damage_writable, True),
    ("staging-leftover", damage_staging, True),
]


@pytest.mark.parametrize(("kind", "damage", "repairable"), KINDS, ids=[k[0] for k in KINDS])
def test_fsck_finds_and_repairs_each_kind(populated: Path, monkeypatch: pytest.MonkeyPatch,
                                          kind: str, damage: Callable[[Path], None],
                                          repairable: bool) -> None:
    assert casfs(populated, "fsck").returncode == 0
    damage(populated)
    monkeypatch.setattr(fsck, "STRAY_GRACE", -1.0)  # no waiting for strays to age
    with Store.open(populated) as store:
        problems = fsck.fsck(store)
        assert [p.kind for p in problems] == [kind], problems
        assert problems[0].detail
        if not repairable:
            assert problems[0].repair is None
            return
        assert fsck.repair(store, problems[0])
        assert fsck.fsck(store) == []


def test_fsck_command_exit_codes_and_preview(populated: Path) -> None:
    damage_writable(populated)
    found = casfs(populated, "fsck", "--json")
    assert found.returncode == 1
    assert json.loads(found.stdout)["problems"][0]["kind"] == "blob-writable"
    preview = casfs(populated, "fsck", "--repair")
    assert preview.returncode == 1 and "nothing changed" in preview.stdout
    assert casfs(populated, "fsck").returncode == 1
    assert casfs(populated, "fsck", "--repair", "--apply").returncode == 0
    assert casfs(populated, "fsck").returncode == 0
    assert casfs(populated, "fsck", "--apply").returncode == 2


def test_a_backup_taken_while_a_mount_writes_restores_cleanly(mounter: Mounter,
                                                              tmp_path: Path) -> None:
    mnt = mounter.mount()
    d = mnt / "unpaywall" / "W1"
    d.mkdir(parents=True)
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            (d / f"f{i}.txt").write_bytes(os.urandom(2000))
            written.append(f"f{i}.txt")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        result = casfs(mounter.store_path, "backup", str(tmp_path / "bk"), "--json")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 0, result.stderr
    meta = json.loads(result.stdout)
    assert 0 < meta["counts"]["documents"] <= len(written)
    mounter.umount()
    check = casfs(mounter.store_path, "restore", str(tmp_path / "bk"))
    assert check.returncode == 0 and "good backup" in check.stdout
    restored = casfs(mounter.store_path, "restore", str(tmp_path / "bk"), "--apply", "--json")
    assert restored.returncode == 0, restored.stderr
    assert Path(json.loads(restored.stdout)["previous_catalog"]).is_file()
    stats = json.loads(casfs(mounter.store_path, "stats", "--json").stdout)
    assert stats["documents"] == meta["counts"]["documents"]
    # The files written after the backup are stray blobs now, nothing worse.
    report = json.loads(casfs(mounter.store_path, "fsck", "--json").stdout)
    assert {p["kind"] for p in report["problems"]} <= {"stray-blob"}
    assert casfs(mounter.store_path, "verify").returncode == 0


def test_restore_refuses_a_damaged_backup_and_changes_nothing(populated: Path,
                                                              tmp_path: Path) -> None:
    assert casfs(populated, "backup", str(tmp_path / "bk")).returncode == 0
    with (tmp_path / "bk" / "catalog.db").open("r+b") as f:
        f.seek(5000)
        f.write(b"\xff" * 64)
    before = (populated / "catalog.db").stat().st_mtime_ns
    result = casfs(populated, "restore", str(tmp_path / "bk"), "--apply")
    assert result.returncode == 1 and "checksum" in result.stderr
    assert (populated / "catalog.db").stat().st_mtime_ns == before
    assert not list(populated.glob("catalog.db.before-restore-*"))


def test_restore_refuses_while_mounted(mounter: Mounter, tmp_path: Path) -> None:
    assert casfs(mounter.store_path, "backup", str(tmp_path / "bk")).returncode == 0
    mounter.mount()
    result = casfs(mounter.store_path, "restore", str(tmp_path / "bk"), "--apply")
    assert result.returncode == 2 and "unmount first" in result.stderr
