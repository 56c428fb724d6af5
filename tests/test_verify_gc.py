"""verify and gc: tampered and missing blobs, previews, exact deletion, retention,
and gc racing a mount that keeps writing the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from casfs.ingest import ingest_file
from casfs.store import Store

from .conftest import Mounter


def casfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), *args],
                          capture_output=True, text=True, check=False)


def put(store_path: Path, tmp_path: Path, name: str, data: bytes, resolver: str = "unpaywall",
        artifact: str = "W1") -> str:
    src = tmp_path / f"src-{name}"
    src.write_bytes(data)
    with Store.open(store_path) as store:
        ingest_file(store, src, resolver=resolver, artifact_id=artifact,
                    source_url=f"https://x/{resolver}/{artifact}/{name}", name=name)
    return hashlib.sha256(data).hexdigest()


def counters(store_path: Path) -> dict[str, int]:
    with Store.open(store_path, readonly=True) as store:
        return {name: value for name, labels, value in store.catalog.counters() if not labels}


def blob_file(store_path: Path, sha: str) -> Path:
    return store_path / "cas" / "sha256" / sha[:2] / sha[2:]


def test_a_tampered_blob_fails_verify_is_quarantined_and_named(store_path: Path,
                                                               tmp_path: Path) -> None:
    good = put(store_path, tmp_path, "good.pdf", b"good bytes")
    bad = put(store_path, tmp_path, "bad.pdf", b"original bytes")
    put(store_path, tmp_path, "copy.pdf", b"original bytes", artifact="W2")
    path = blob_file(store_path, bad)
    path.chmod(0o644)
    path.write_bytes(b"flipped bytes!")
    result = casfs(store_path, "verify", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["checked"], report["ok"]) == (2, 1)
    failure = report["failures"][0]
    assert failure["sha256"] == bad and failure["problem"] == "mismatch"
    assert sorted(failure["paths"]) == ["/unpaywall/W1/bad.pdf", "/unpaywall/W2/copy.pdf"]
    assert not path.exists()
    assert Path(failure["quarantined_to"]).read_bytes() == b"flipped bytes!"
    assert counters(store_path)["casfs_verify_failures_total"] == 1
    assert blob_file(store_path, good).exists()
    human = casfs(store_path, "verify")
    assert human.returncode == 0 and "1 blobs" in human.stdout  # quarantined: not rechecked


def test_a_missing_blob_fails_verify(store_path: Path, tmp_path: Path) -> None:
    sha = put(store_path, tmp_path, "a.pdf", b"will vanish")
    blob_file(store_path, sha).unlink()
    result = casfs(store_path, "verify", "--sha", sha)
    assert result.returncode == 1
    assert "missing" in result.stdout and "/unpaywall/W1/a.pdf" in result.stdout


def test_verify_covers_the_least_recently_verified_first_and_resumes(
        store_path: Path, tmp_path: Path) -> None:
    shas = {put(store_path, tmp_path, f"{i}.pdf", f"bytes {i}".encode()) for i in range(4)}
    first = json.loads(casfs(store_path, "verify", "--oldest", "2", "--json").stdout)
    time.sleep(0.01)
    second = json.loads(casfs(store_path, "verify", "--oldest", "2", "--json").stdout)
    assert first["checked"] == second["checked"] == 2
    with Store.open(store_path, readonly=True) as store:
        stamps = dict(store.catalog.conn.execute("SELECT sha256, last_verified_at FROM blobs"))
    assert set(stamps) == shas and all(stamps.values())
    stopped = json.loads(casfs(store_path, "verify", "--max-duration", "0", "--json").stdout)
    assert stopped["stopped_early"] and stopped["checked"] == 0
    one = json.loads(casfs(store_path, "verify", "--path", "/unpaywall/W1/0.pdf",
                           "--json").stdout)
    assert one["checked"] == 1 and one["ok"] == 1
    assert counters(store_path)["casfs_blobs_verified_total"] == 5


def gc_json(store_path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    result = casfs(store_path, "gc", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def unlink(store_path: Path, path: str) -> None:
    with Store.open(store_path) as store:
        doc = store.catalog.resolve_path(path)
        assert doc is not None
        store.catalog.unlink_document(doc.ino)


def test_gc_preview_lists_the_right_blobs_and_deletes_nothing(store_path: Path,
                                                              tmp_path: Path) -> None:
    live = put(store_path, tmp_path, "live.pdf", b"live")
    gone = put(store_path, tmp_path, "gone.pdf", b"gone")
    shared = put(store_path, tmp_path, "shared.pdf", b"shared")
    put(store_path, tmp_path, "shared2.pdf", b"shared", artifact="W2")
    unlink(store_path, "/unpaywall/W1/gone.pdf")
    unlink(store_path, "/unpaywall/W1/shared.pdf")  # still used by W2
    report = gc_json(store_path, "--grace", "0", "--keep-history", "0")
    assert [g["sha256"] for g in report["garbage"]] == [gone]
    assert report["garbage"][0]["last_path"] == "/unpaywall/W1/gone.pdf"
    assert report["removed"] == 0 and blob_file(store_path, gone).exists()
    assert gc_json(store_path, "--grace", "0", "--keep-history", "1d")["blobs"] == 0
    assert gc_json(store_path, "--grace", "1d", "--keep-history", "0")["blobs"] == 0
    human = casfs(store_path, "gc", "--grace", "0", "--keep-history", "0")
    assert "/unpaywall/W1/gone.pdf" in human.stdout and "nothing changed" in human.stdout
    assert all(blob_file(store_path, s).exists() for s in (live, gone, shared))


def test_gc_apply_removes_exactly_the_garbage(store_path: Path, tmp_path: Path) -> None:
    keep = [put(store_path, tmp_path, f"keep{i}.pdf", f"keep {i}".encode()) for i in range(3)]
    drop = [put(store_path, tmp_path, f"drop{i}.pdf", f"drop {i}".encode()) for i in range(3)]
    for i in range(3):
        unlink(store_path, f"/unpaywall/W1/drop{i}.pdf")
    report = gc_json(store_path, "--grace", "0", "--keep-history", "0", "--apply")
    assert report["removed"] == 3 and report["removed_bytes"] == 18
    assert not any(blob_file(store_path, s).exists() for s in drop)
    assert all(blob_file(store_path, s).exists() for s in keep)
    with Store.open(store_path, readonly=True) as store:
        states = dict(store.catalog.conn.execute("SELECT sha256, state FROM blobs"))
        assert store.catalog.stats()["blobs"] == 3
    assert {states[s] for s in drop} == {"deleted"} and {states[s] for s in keep} == {"present"}
    assert counters(store_path)["casfs_gc_removed_total"] == 3
    assert gc_json(store_path, "--grace", "0", "--keep-history", "0", "--apply")["blobs"] == 0
    # A deleted blob comes back when its bytes are stored again.
    put(store_path, tmp_path, "again.pdf", b"drop 0")
    assert blob_file(store_path, drop[0]).read_bytes() == b"drop 0"


def test_retention_rules_keep_some_history_longer(store_path: Path, tmp_path: Path,
                                                  isolated_config: Path) -> None:
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text('[gc]\ngrace = 0\nkeep_history = 0\n'
                               '[[gc.retention]]\nresolver = "arxiv"\nkeep_history = "1d"\n')
    kept = put(store_path, tmp_path, "a.pdf", b"arxiv bytes", resolver="arxiv")
    dropped = put(store_path, tmp_path, "b.pdf", b"unpaywall bytes")
    unlink(store_path, "/arxiv/W1/a.pdf")
    unlink(store_path, "/unpaywall/W1/b.pdf")
    report = gc_json(store_path, "--apply")
    assert [g["sha256"] for g in report["garbage"]] == [dropped]
    assert blob_file(store_path, kept).exists()


def test_gc_beside_a_mount_writing_the_same_bytes_never_deletes_a_referenced_blob(
        mounter: Mounter, tmp_path: Path) -> None:
    mnt = mounter.mount()
    d = mnt / "unpaywall" / "W1"
    d.mkdir(parents=True)
    payloads = [f"payload {i}".encode() * 100 for i in range(3)]
    stop = time.monotonic() + 8
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            i = 0
            while time.monotonic() < stop:
                path = d / f"w{k}-{i % 4}.bin"
                path.write_bytes(payloads[i % len(payloads)])
                if i % 2:
                    path.unlink()  # leaves garbage for gc, to be written again at once
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    rounds = removed = 0
    while time.monotonic() < stop:
        report = gc_json(mounter.store_path, "--grace", "0", "--keep-history", "0", "--apply")
        removed += report["removed"]
        rounds += 1
    for t in threads:
        t.join()
    assert not errors, errors
    assert rounds >= 3 and removed > 0, (rounds, removed)
    for path in d.iterdir():
        assert path.read_bytes() in payloads
    with Store.open(mounter.store_path, readonly=True) as store:
        for doc in store.catalog.iter_live_documents():
            assert blob_file(mounter.store_path, doc.sha256).exists(), doc
    assert casfs(mounter.store_path, "verify").returncode == 0


def test_gc_and_verify_refuse_bad_arguments(store_path: Path) -> None:
    for args in (["gc", "--grace", "soon"], ["verify", "--sample", "2"],
                 ["verify", "--sha", "abc"]):
        result = casfs(store_path, *args)
        assert result.returncode == 2, args
    assert os.path.exists(store_path / "catalog.db")


def test_a_blob_gc_deletes_during_verify_is_no_failure(store_path: Path,
                                                       tmp_path: Path) -> None:
    from casfs import verify as verifying

    sha = put(store_path, tmp_path, "gone.pdf", b"collected meanwhile")
    unlink(store_path, "/unpaywall/W1/gone.pdf")
    with Store.open(store_path) as store:
        selection = list(verifying.select(store.catalog))  # the snapshot verify works from
        assert selection == [(sha, len(b"collected meanwhile"))]
    assert gc_json(store_path, "--grace", "0", "--keep-history", "0", "--apply")["removed"] == 1
    with Store.open(store_path) as store:
        report = verifying.verify(store, selection)
    assert report.checked == 1 and report.failures == []


def test_gc_deletes_a_thousand_blobs_while_a_mount_writes(store_path: Path, tmp_path: Path,
                                                           mounter: Mounter) -> None:
    """gc reads its garbage a page at a time, so no stale read holds up its deletes
    while a mount commits (it used to fail with 'database is locked' every time)."""
    garbage = 1_100
    with Store.open(store_path) as store:
        for i in range(garbage):
            src = tmp_path / "src"
            src.write_bytes(b"garbage %d" % i)
            result = ingest_file(store, src, resolver="unpaywall", artifact_id="G",
                                 name=f"g{i}.txt")
            store.catalog.unlink_document(result.document.ino)
    mnt = mounter.mount()
    (mnt / "unpaywall" / "W").mkdir(parents=True)
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:
        i = 0
        deadline = time.monotonic() + 60  # bounded, whatever happens to gc
        while not stop.is_set() and time.monotonic() < deadline:
            (mnt / "unpaywall" / "W" / f"w{i}.txt").write_bytes(b"live %d" % i)
            written.append(i)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        result = casfs(store_path, "gc", "--grace", "0", "--keep-history", "0", "--apply",
                       "--json")
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["removed"] >= garbage
    for i in range(garbage):
        sha = hashlib.sha256(b"garbage %d" % i).hexdigest()
        assert not (store_path / "cas" / "sha256" / sha[:2] / sha[2:]).exists()
    for i in written:
        assert (mnt / "unpaywall" / "W" / f"w{i}.txt").read_bytes() == b"live %d" % i
