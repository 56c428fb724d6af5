"""casfs import-manifest against generated run directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casfs.records import DocumentFilter
from casfs.store import Store
from casfs.tools import cli

from .conftest import BOTH_CATALOGS, Mounter
from .runs import Run


def run_import(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store),
                           "import-manifest", *args], capture_output=True, text=True,
                          check=False)


def import_json(store: Path, *args: str) -> dict:  # type: ignore[type-arg]
    result = run_import(store, *args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def catalog_contents(store: Path) -> set[tuple[str, str, str, str | None, str, str]]:
    with Store.open(store, readonly=True) as opened:
        return {(f.document.resolver, f.document.artifact_id, f.document.source_url or "",
                 f.document.content_type, f.document.sha256, f.path)
                for f in opened.catalog.search(DocumentFilter())}


@BOTH_CATALOGS
def test_a_moved_run_imports_with_correct_counts(tmp_path: Path, store_path: Path) -> None:
    run = Run(tmp_path / "moved-run")
    for i in range(6):
        run.add_file(f"W{i}", old_root="/data/runs/2025-10-17")
    run.add_file("W100", folder="HTML", classification="html",
                 old_root="/data/runs/2025-10-17", content_type="text/html")
    shared = os.urandom(3000)  # the same bytes from two resolvers: one blob
    run.add_file("W7", "arxiv", data=shared, old_root="/data/runs/2025-10-17")
    run.add_file("W8", "crossref", data=shared, old_root="/data/runs/2025-10-17")
    run.add_line({"record_type": "attempt", "resolver_name": "unpaywall", "status": "http-200"})
    run.add_line({"record_type": "summary"})
    run.add_line({"record_type": "manifest", "classification": "miss", "work_id": "W9",
                  "resolver": "unpaywall", "url": "https://x", "path": None})
    run.add_line({"record_type": "manifest", "classification": "pdf", "dry_run": True,
                  "work_id": "W10", "resolver": "unpaywall", "url": "https://y", "path": "/z"})
    run.write()

    preview = import_json(store_path, str(run.root))
    assert preview["would_import"] == 9 and preview["imported"] == 0
    assert catalog_contents(store_path) == set()

    report = import_json(store_path, str(run.manifest), "--apply")
    assert (report["imported"], report["error_count"], report["dedup_hits"]) == (9, 0, 1)
    assert report["skipped_by_reason"] == {"record_type attempt": 1, "record_type summary": 1,
                                           "classification miss": 1, "dry run": 1}
    assert report["skipped"] == 4
    assert report["bytes"] == sum(len(d) for d in run.files.values())
    with Store.open(store_path, readonly=True) as store:
        stats = store.catalog.stats()
    assert (stats["documents"], stats["blobs"]) == (9, 8)
    html = [c for c in catalog_contents(store_path) if c[1] == "W100"]
    assert html[0][3] == "text/html" and html[0][5] == "/unpaywall/W100/2024__paper__W100.html"


@BOTH_CATALOGS
def test_a_second_import_adds_nothing(tmp_path: Path, store_path: Path) -> None:
    run = Run(tmp_path / "run")
    for i in range(5):
        run.add_file(f"W{i}", with_sha=i % 2 == 0)
    run.write()
    first = import_json(store_path, str(run.manifest), "--apply")
    before = catalog_contents(store_path)
    second = import_json(store_path, str(run.manifest), "--apply")
    assert first["imported"] == 5
    assert (second["imported"], second["already_imported"], second["bytes"]) == (0, 5, 0)
    assert catalog_contents(store_path) == before
    with Store.open(store_path, readonly=True) as store:
        assert store.catalog.stats()["versions"] == 5


def test_every_bad_line_is_reported_with_its_line_number(tmp_path: Path,
                                                         store_path: Path) -> None:
    run = Run(tmp_path / "run")
    run.add_file("W0")
    good = {"record_type": "manifest", "classification": "pdf", "work_id": "W1",
            "resolver": "unpaywall", "url": "https://x/1", "path": str(tmp_path / "none.pdf")}
    bad: dict[str, bytes | dict] = {  # type: ignore[type-arg]
        "malformed JSON": b'{"record_type": "manifest", ',
        "a JSON object": b'["a", "list"]',
        "not UTF-8": b"\x00\xff\xfe junk \x80",
        "missing key 'work_id'": {**good, "work_id": None},
        "missing key 'url'": {k: v for k, v in good.items() if k != "url"},
        "key 'resolver' is empty": {**good, "resolver": ""},
        "missing file": good,
        "'path' is null": {**good, "path": None},
        "key 'work_id' has a int": {**good, "work_id": 4415231876},
        "key 'dry_run' has a str": {**good, "dry_run": "no"},
        "key 'sha256' is not a SHA-256": {**good, "sha256": "<sha256 of that file>"},
        "key 'timestamp' is not an ISO 8601": {**good, "timestamp": "yesterday"},
        "key 'content_length' has a str": {**good, "content_length": "18211"},
        "over 1,048,576": b'{"x": "' + b"a" * (1 << 20) + b'"}',
    }
    numbers = {reason: run.add_line(line) for reason, line in bad.items()}
    mismatch = run.add_file("W2")
    mismatch["sha256"] = "0" * 64
    run.lines[-1] = json.dumps(mismatch).encode()
    numbers["sha256 mismatch"] = len(run.lines)
    run.add_file("W3")  # a good line after all the bad ones is still imported
    run.write()
    errors_file = tmp_path / "errors.jsonl"
    result = run_import(store_path, str(run.manifest), "--apply", "--json",
                        "--errors", str(errors_file))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["imported"] == 2
    by_line = {e["line"]: e["reason"] for e in report["errors"]}
    for reason, number in numbers.items():
        assert reason in by_line.get(number, ""), (reason, number, by_line.get(number))
    assert report["error_count"] == len(numbers)
    written = [json.loads(x) for x in errors_file.read_text().splitlines()]
    assert {e["line"] for e in written} == set(numbers.values())
    assert catalog_contents(store_path) and all(
        c[1] in ("W0", "W3") for c in catalog_contents(store_path))
    human = run_import(store_path, str(run.manifest))
    assert f"manifest.jsonl:{numbers['missing file']}: missing file" in human.stdout


def test_an_import_killed_halfway_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    run = Run(tmp_path / "run")
    for i in range(3000):
        run.add_file(f"W{i}", data=os.urandom(4096) if i % 10 else b"shared bytes")
    run.write()
    interrupted, clean = tmp_path / "interrupted", tmp_path / "clean"
    for store in (interrupted, clean):
        Store.init(store).close()
    # TMPDIR: the killed importer cannot remove its multiprocessing directory itself.
    proc = subprocess.Popen([sys.executable, "-m", "casfs.tools", "--store", str(interrupted),
                             "import-manifest", str(run.manifest), "--apply"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "import ended too soon"
        with Store.open(interrupted, readonly=True) as store:
            if store.catalog.stats()["documents"] >= 256:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the importer only: its workers must notice
    proc.wait()
    workers_gone = time.monotonic() + 10
    while _session_alive(proc.pid):
        assert time.monotonic() < workers_gone, "the import's workers outlived it"
        time.sleep(0.1)
    with Store.open(interrupted, readonly=True) as store:
        assert store.catalog.stats()["documents"] < 3000, "killed too late to prove anything"
    resumed = import_json(interrupted, str(run.manifest), "--apply")
    assert resumed["already_imported"] >= 256
    import_json(clean, str(run.manifest), "--apply")
    assert catalog_contents(interrupted) == catalog_contents(clean)
    assert len(catalog_contents(clean)) == 3000
    for store in (interrupted, clean):
        with Store.open(store, readonly=True) as opened:
            for doc in opened.catalog.iter_live_documents():
                assert opened.blobs.has(doc.sha256)


def _session_alive(session: int) -> bool:
    """Whether any process of this session (the importer's workers) still runs."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                return True
    return False


@BOTH_CATALOGS
def test_move_removes_originals_only_once_registered(tmp_path: Path, store_path: Path) -> None:
    run = Run(tmp_path / "run")
    run.add_file("W1")
    run.add_file("W2")
    bad = run.add_file("W3")
    bad["sha256"] = "1" * 64
    run.lines[-1] = json.dumps(bad).encode()
    linked = run.add_file("W4")
    run.write()
    pdf = run.root / "PDF"
    os.link(pdf / Path(linked["path"]).name, tmp_path / "second-link.pdf")
    report = import_json(store_path, str(run.manifest), "--apply", "--move")
    assert report["imported"] == 3 and report["error_count"] == 1
    assert sorted(p.name for p in pdf.iterdir()) == ["2024__paper__W3.pdf"]  # kept: mismatch
    # A file with another hard link is copied, not linked: the other link stays.
    assert (tmp_path / "second-link.pdf").read_bytes() == run.files[
        "unpaywall/W4/https://pub.example/unpaywall/W4.pdf"]
    with Store.open(store_path, readonly=True) as store:
        for doc in store.catalog.iter_live_documents():
            blob = store.blobs.path(doc.sha256)
            assert blob.stat().st_nlink == 1  # never shares an inode with a user's file
            assert (blob.stat().st_mode & 0o777) == 0o444


def test_an_import_shows_up_in_a_running_mount(tmp_path: Path, store_path: Path,
                                               mounter: Mounter) -> None:
    mnt = mounter.mount("cache_timeout=1")
    run = Run(tmp_path / "run")
    line = run.add_file("W4415231876")
    run.write()
    assert os.listdir(mnt) == []
    assert cli.main(["--store", str(store_path), "import-manifest", str(run.manifest),
                     "--apply"]) == 0
    path = mnt / "unpaywall" / "W4415231876" / Path(line["path"]).name
    deadline = time.monotonic() + 5
    while not path.exists():
        assert time.monotonic() < deadline, "the import did not show in the mount"
        time.sleep(0.1)
    assert path.read_bytes() == next(iter(run.files.values()))


def test_preview_changes_nothing(tmp_path: Path, store_path: Path) -> None:
    run = Run(tmp_path / "run")
    run.add_file("W1")
    run.write()
    before = sorted(p.relative_to(store_path) for p in store_path.rglob("*")
                    if p.is_file() and p.name != "catalog.db" and "catalog.db" not in p.name)
    result = run_import(store_path, str(run.root))
    assert result.returncode == 0 and "nothing changed" in result.stdout
    after = sorted(p.relative_to(store_path) for p in store_path.rglob("*")
                   if p.is_file() and "catalog.db" not in p.name)
    assert before == after and catalog_contents(store_path) == set()


@pytest.mark.parametrize("what", ["missing manifest", "empty directory"])
def test_no_manifest_is_a_usage_error(tmp_path: Path, store_path: Path, what: str) -> None:
    target = tmp_path / "nothing-here"
    if what == "empty directory":
        target.mkdir()
    result = run_import(store_path, str(target))
    assert result.returncode == 2 and "manifest" in result.stderr
