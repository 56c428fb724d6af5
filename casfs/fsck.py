"""Checking a store against the laws of the design notes, and repairing it.

Each check yields `Problem`s of one kind; each kind names its repair, which
`repair` applies. Checks read the catalog and walk `cas/` one fan-out directory
at a time, so memory stays small on a large store. Files younger than
`STRAY_GRACE` are left alone: they may belong to an ingest in flight.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casfs import bulk_load
from casfs.blobs import Listing
from casfs.blobs.local import LocalBlobStore
from casfs.blobs.staging import is_sha256_hex
from casfs.moments import format_moment
from casfs.processes import pid_alive
from casfs.store import Store

STRAY_GRACE = 600.0  # seconds
_STAGING = re.compile(r"^(\d+)-[0-9a-f]+\.part$")


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str
    path: str | None = None  # a virtual path or a file of the store
    sha256: str | None = None
    repair: str | None = None  # what --repair --apply does about it; None: nothing it can
    key: tuple[str, ...] = ()  # identifiers the repair needs (resolver, artifact_id)

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "path": self.path,
                "sha256": self.sha256, "repair": self.repair}


Check = Callable[[Store], Iterator[Problem]]


def check_catalog(store: Store) -> Iterator[Problem]:
    for detail in store.catalog.integrity_problems():
        yield Problem("catalog-integrity", detail)  # no repair: casfs restore a backup


def check_records(store: Store) -> Iterator[Problem]:
    """Live records whose blob is missing, quarantined, of the wrong size, or whose
    directory is missing (they would be invisible: law 5)."""
    for usage in store.catalog.live_blob_usage():
        if usage.state != "present" or not store.blobs.has(usage.sha256):
            what = "missing" if usage.state == "present" else usage.state
            yield Problem("missing-blob", f"{usage.records} live record(s) use a blob that "
                          f"is {what}", _path_of(store, usage.example_ino), usage.sha256,
                          "close those records (history keeps them)")
        elif usage.record_bytes != usage.blob_bytes:
            yield Problem("size-mismatch", f"records say {usage.record_bytes} bytes, the "
                          f"blob row {usage.blob_bytes}", _path_of(store, usage.example_ino),
                          usage.sha256, "re-hash and correct or quarantine")
    for doc in store.catalog.records_without_directory():
        yield Problem("invisible-record", f"no directory for {doc.resolver}/{doc.artifact_id}",
                      f"{doc.resolver}/{doc.artifact_id}/{doc.basename}",
                      repair="create the directory", key=(doc.resolver, doc.artifact_id))
    for path, count in store.catalog.path_collisions():
        yield Problem("path-collision", f"{count} live records at one path", path)


def _path_of(store: Store, ino: int) -> str | None:
    """The virtual path of a live record, for a problem's report (None if invisible)."""
    doc = store.catalog.get_document(ino)
    if doc is None or store.catalog.find_directory(doc.resolver, doc.artifact_id) is None:
        return None
    return store.catalog.virtual_path(doc)


def _local(store: Store) -> LocalBlobStore | None:
    """The store's blob directory, when its blobs are files (the file checks need it)."""
    return store.blobs if isinstance(store.blobs, LocalBlobStore) else None


def _file_sha256(path: str) -> tuple[str, int]:
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest(), os.fstat(f.fileno()).st_size


def check_blob_files(store: Store) -> Iterator[Problem]:
    """Files under cas/: stray (no catalog row), misnamed, writable, wrong size."""
    local = _local(store)
    if local is None:
        return
    root = local.cas_dir / "sha256"
    now = time.time()
    for fanout in sorted(os.scandir(root), key=lambda e: e.name):
        if not fanout.is_dir(follow_symlinks=False) or not re.fullmatch(r"[0-9a-f]{2}",
                                                                        fanout.name):
            yield Problem("bad-blob-name", "not a fan-out directory", fanout.path,
                          repair="move to quarantine/")
            continue
        known = store.catalog.blob_sizes_with_prefix(fanout.name)
        for entry in os.scandir(fanout.path):
            sha = fanout.name + entry.name
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or not is_sha256_hex(sha):
                yield Problem("bad-blob-name", "not a blob file", entry.path,
                              repair="move to quarantine/")
                continue
            if st.st_mode & 0o222:
                yield Problem("blob-writable", f"mode {stat.S_IMODE(st.st_mode):o}",
                              entry.path, sha, "make it read-only")
            if sha not in known:
                if now - st.st_ctime > STRAY_GRACE:
                    yield Problem("stray-blob", "a blob file with no catalog row",
                                  entry.path, sha, "adopt it if its hash matches, "
                                  "else quarantine it")
            elif known[sha] != st.st_size:
                yield Problem("size-mismatch", f"the file has {st.st_size} bytes, the "
                              f"catalog says {known[sha]}", entry.path, sha,
                              "re-hash and correct or quarantine")


def objects_beside_ledger(store: Store) -> Iterator[tuple[str, int, float, int | None]]:
    """(sha256, size, last modified, the ledger's size or None when it has no row
    that is not a tombstone) of every object of an object store; nothing for a local
    one. OSError on any listing error: a failed listing is never "no objects"."""
    if store.blobs.local or not isinstance(store.blobs, Listing):
        return
    prefix, known = "", {}
    for sha, size, modified in store.blobs.list_blobs():
        if sha[:2] != prefix:  # listed in key order: one fan-out at a time
            prefix, known = sha[:2], store.catalog.blob_sizes_with_prefix(sha[:2])
        yield sha, size, modified, known.get(sha)


def check_objects(store: Store) -> Iterator[Problem]:
    """An object store's blobs against the ledger: objects with no catalog row (an
    upload whose registration never committed, or a catalog restored from an older
    backup) and objects of the wrong size."""
    now = time.time()
    for sha, size, modified, recorded in objects_beside_ledger(store):
        if recorded is None:
            if now - modified > STRAY_GRACE:
                yield Problem("stray-object", "an object with no catalog row",
                              store.blobs.uri(sha), sha, "adopt it if its hash matches, "
                              "else quarantine it")
        elif recorded != size:
            yield Problem("size-mismatch", f"the object has {size} bytes, the catalog says "
                          f"{recorded}", store.blobs.uri(sha), sha,
                          "re-hash and correct or quarantine")


def _adopt_or_quarantine_object(store: Store, problem: Problem) -> bool:
    assert problem.sha256
    hashed = store.blobs.hash_blob(problem.sha256)
    if hashed.actual == problem.sha256:
        store.catalog.adopt_blob(problem.sha256, hashed.size)
        return True
    with store.catalog.write_transaction():
        store.blobs.quarantine(problem.sha256, hashed)
    return True


def check_staging(store: Store) -> Iterator[Problem]:
    """Named staging files left by a process that is gone (unnamed ones never stay)."""
    local = _local(store)
    if local is None:
        return
    for entry in os.scandir(local.tmp_dir):
        match = _STAGING.match(entry.name)
        if match is None or not pid_alive(int(match.group(1))):
            yield Problem("staging-leftover", "left by a process that is gone",
                          entry.path, repair="delete it")


def check_crashed_mounts(store: Store) -> Iterator[Problem]:
    """Mounts that a crash ended before what they placed was surely on disk: bulk loads
    (-o durability=batch) without their last durability round, and durable mounts whose
    machine went down (their rounds link before they sync: casfs.link_first)."""
    for marker in bulk_load.unfinished(store.layout):
        since = format_moment(marker.durable_until)
        if marker.link_first:
            kind = "unsynced-links"
            detail = (f"a mount (pid {marker.pid}) was running when its machine went "
                      f"down: blobs it linked since {since} are unchecked")
        else:
            kind = "unfinished-bulk-load"
            detail = (f"a bulk-loading mount (pid {marker.pid}) ended without its last "
                      f"durability round: blobs placed since {since} are unchecked")
        yield Problem(kind, detail, str(marker.path),
                      repair="hash them; move aside the lost ones and close their records")


CHECKS: list[Check] = [check_crashed_mounts, check_catalog, check_records, check_blob_files,
                       check_objects, check_staging]


def fsck(store: Store) -> list[Problem]:
    """Every problem, once: a blob seen wrong from its records and from its file is one."""
    problems, seen = [], set()
    for check in CHECKS:
        for problem in check(store):
            key = (problem.kind, problem.sha256 or problem.path)
            if key not in seen:
                seen.add(key)
                problems.append(problem)
    return problems


def repair(store: Store, problem: Problem) -> bool:
    """Apply the repair of one problem; True when it was repaired."""
    action = _REPAIRS.get(problem.kind)
    return bool(action and action(store, problem))


def _close_records_of_missing_blob(store: Store, problem: Problem) -> bool:
    assert problem.sha256
    with store.catalog.write_transaction():
        state = store.catalog.blob_state(problem.sha256)
        if state == "present" and store.blobs.has(problem.sha256):
            return True  # came back meanwhile
        if state == "present":
            store.catalog.set_blob_state(problem.sha256, "missing")
        store.catalog.close_records_of_blob(problem.sha256, "blob missing")
    return True


def _adopt_or_quarantine(store: Store, problem: Problem) -> bool:
    assert problem.sha256 and problem.path
    actual, size = _file_sha256(problem.path)
    if actual != problem.sha256:
        return _quarantine(store, problem)
    os.chmod(problem.path, 0o444)
    store.catalog.adopt_blob(problem.sha256, size)
    return True


def _fix_size(store: Store, problem: Problem) -> bool:
    assert problem.sha256
    hashed = store.blobs.hash_blob(problem.sha256)
    if hashed.actual != problem.sha256:
        with store.catalog.write_transaction():
            if store.blobs.quarantine(problem.sha256, hashed) is not None:
                store.catalog.set_blob_state(problem.sha256, "quarantined")
        return True
    store.catalog.correct_blob_size(problem.sha256, hashed.size)
    return True


def _quarantine(store: Store, problem: Problem) -> bool:
    local = _local(store)
    assert problem.path and local is not None
    local.quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = local.quarantine_dir / f"{Path(problem.path).name}.{int(time.time())}"
    with store.catalog.write_transaction():
        os.rename(problem.path, target)
        if problem.sha256:
            store.catalog.set_blob_state(problem.sha256, "quarantined")
    return True


def _make_read_only(store: Store, problem: Problem) -> bool:
    assert problem.path
    os.chmod(problem.path, 0o444)
    return True


def _delete_staging(store: Store, problem: Problem) -> bool:
    assert problem.path
    Path(problem.path).unlink(missing_ok=True)
    return True


def _create_directory(store: Store, problem: Problem) -> bool:
    resolver, artifact_id = problem.key
    store.catalog.ensure_directory(resolver, artifact_id)
    return True


def _recover_crashed_mount(store: Store, problem: Problem) -> bool:
    for marker in bulk_load.unfinished(store.layout):
        if str(marker.path) == problem.path:
            bulk_load.recover(store, marker)
    return True


_REPAIRS: dict[str, Callable[[Store, Problem], bool]] = {
    "unfinished-bulk-load": _recover_crashed_mount,
    "unsynced-links": _recover_crashed_mount,
    "missing-blob": _close_records_of_missing_blob,
    "stray-blob": _adopt_or_quarantine,
    "stray-object": _adopt_or_quarantine_object,
    "bad-blob-name": _quarantine,
    "blob-writable": _make_read_only,
    "size-mismatch": _fix_size,
    "staging-leftover": _delete_staging,
    "invisible-record": _create_directory,
}
