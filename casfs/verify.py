"""Verifying blobs: re-hash them and compare with their names (law 1, checked).

Blobs are hashed in worker threads (hashlib releases the GIL), least recently
verified first, and the ledger (`blobs.last_verified_at`) is updated as results
come in, so a run cut short by `max_duration` resumes where it stopped. A blob
whose bytes do not match its name is moved to `quarantine/`; a missing one is
marked missing; both are failures, listed with the paths of the records that use
them. Quarantine happens inside a catalog write transaction and only if the file
is still the one that was hashed: a concurrent ingest of the right bytes restores
the blob (see `SqlCatalog._require_present`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from casfs.blobs import Hashed
from casfs.catalog import Catalog
from casfs.errors import CasfsError
from casfs.records import DocumentFilter
from casfs.store import Store

LEDGER_BATCH = 500


@dataclass(frozen=True)
class Checked:
    hashed: Hashed  # what re-reading the blob from its store found
    expected_bytes: int  # what the ledger says


@dataclass
class Failure:
    sha256: str
    problem: Literal["mismatch", "missing", "size", "damaged-cached-copy"]
    actual_sha256: str | None
    paths: list[str]
    quarantined_to: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "problem": self.problem,
                "actual_sha256": self.actual_sha256, "paths": self.paths,
                "quarantined_to": self.quarantined_to}


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    bytes: int = 0
    failures: list[Failure] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "ok": self.ok, "bytes": self.bytes,
                "failed": len(self.failures),
                "failures": [f.as_json() for f in self.failures],
                "stopped_early": self.stopped_early, "seconds": round(self.seconds, 3)}


def check_blob(store: Store, sha256: str, expected_bytes: int) -> Checked:
    return Checked(store.blobs.hash_blob(sha256), expected_bytes)


Progress = Callable[[VerifyReport, int], None]  # report so far, bytes to check in all


def verify(store: Store, selection: Iterable[tuple[str, int]], *, jobs: int = 2,
           max_duration: float | None = None, total_bytes: int = 0,
           on_progress: Progress | None = None) -> VerifyReport:
    report = VerifyReport()
    started = time.monotonic()
    deadline = started + max_duration if max_duration is not None else None
    verified: list[str] = []
    in_flight: set[Future[Checked]] = set()
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="casfs-verify") as pool:
        blobs = iter(selection)
        while True:
            while len(in_flight) < 2 * max(1, jobs) and not report.stopped_early:
                if deadline is not None and time.monotonic() >= deadline:
                    report.stopped_early = True
                    break
                item = next(blobs, None)
                if item is None:
                    break
                sha, size = item
                in_flight.add(pool.submit(check_blob, store, sha, size))
            if not in_flight:
                break
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                _judge(store, future.result(), report, verified)
            if len(verified) >= LEDGER_BATCH:
                store.catalog.mark_verified(verified, time.time())
                verified.clear()
            if on_progress:
                on_progress(report, total_bytes)
    if verified:
        store.catalog.mark_verified(verified, time.time())
    store.catalog.add_to_counters({"casfs_blobs_verified_total": report.checked,
                                   "casfs_verified_bytes_total": report.bytes})
    report.seconds = time.monotonic() - started
    return report


def verify_cache(store: Store, *, jobs: int = 2, on_progress: Progress | None = None
                 ) -> VerifyReport:
    """Re-hash every file of this host's read cache, whatever its stamp says (a change
    beneath the filesystem, such as a failing disk, leaves the stamp as it was). A
    damaged copy is dropped, so the next read fetches the blob again; the object in
    the store is not touched (`verify` without --cache checks those)."""
    cache = store.blobs.cache
    if cache is None:
        raise CasfsError("this store's blobs are read where they are: it keeps no read "
                         "cache (verify without --cache checks the blobs)")
    report = VerifyReport()
    started = time.monotonic()
    cached = cache.cached()
    total = sum(size for _, size in cached)
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="casfs-verify") as pool:
        for (sha256, size), right in zip(cached, pool.map(cache.check, (
                sha for sha, _ in cached)), strict=True):
            if right is None:
                continue  # evicted since it was listed
            report.checked += 1
            report.bytes += size
            if right:
                report.ok += 1
            else:
                paths = [f.path for f in store.catalog.search(DocumentFilter(sha256=sha256))]
                report.failures.append(Failure(sha256, "damaged-cached-copy", None, paths))
            if on_progress:
                on_progress(report, total)
    report.seconds = time.monotonic() - started
    return report


def _judge(store: Store, checked: Checked, report: VerifyReport, verified: list[str]) -> None:
    hashed = checked.hashed
    report.checked += 1
    report.bytes += hashed.size
    if hashed.actual == hashed.sha256 and hashed.size == checked.expected_bytes:
        report.ok += 1
        verified.append(hashed.sha256)
        return
    failure = _fail(store, hashed)
    if failure is None:  # replaced by good bytes meanwhile: checked next time
        report.ok += 1
        return
    report.failures.append(failure)


def _fail(store: Store, hashed: Hashed) -> Failure | None:
    problem: Literal["mismatch", "missing", "size"]
    if hashed.actual is None:
        problem = "missing"
    elif hashed.actual != hashed.sha256:
        problem = "mismatch"
    else:
        problem = "size"  # right bytes, wrong size in the catalog: a catalog problem
    quarantined_to = None
    with store.catalog.write_transaction():
        if store.catalog.blob_state(hashed.sha256) != "present":
            return None  # deleted by gc (or already recorded) since the selection was read
        if problem == "missing":
            if store.blobs.has(hashed.sha256):
                return None  # restored since (a registration put it back)
            store.catalog.set_blob_state(hashed.sha256, "missing")
        elif problem == "mismatch" and store.catalog.lock_blob_for_removal(hashed.sha256):
            quarantined_to = store.blobs.quarantine(hashed.sha256, hashed)
            if quarantined_to is None:
                return None  # replaced since it was hashed: checked next time
            store.catalog.set_blob_state(hashed.sha256, "quarantined")
        store.catalog.bump_counter("casfs_verify_failures_total")
    paths = [f.path for f in store.catalog.search(DocumentFilter(sha256=hashed.sha256))]
    return Failure(hashed.sha256, problem, hashed.actual, paths, quarantined_to)


def select(catalog: Catalog, *, sample: float | None = None, oldest: int | None = None,
           path: str | None = None, sha256: str | None = None) -> Iterator[tuple[str, int]]:
    """The blobs a verify run covers, in the order it checks them."""
    if path is not None:
        doc = catalog.resolve_path(path)
        sha256 = doc.sha256 if doc else None
        if sha256 is None:
            return
    if sha256 is not None:
        size = catalog.blob_size(sha256)
        if size is not None:
            yield sha256, size
        return
    yield from catalog.blobs_to_verify(sample=sample, limit=oldest)
