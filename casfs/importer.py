"""Importing legacy download runs through the one ingest path.

Preview (the default) reads every line, finds every file and says what would be
imported, skipped and why, without hashing or changing anything. Apply sends the
files in chunks to worker processes (threads would serialize on the GIL: measured
2.5x slower), which copy each into a named staging file while hashing it (with
`move`, link it there instead), refuse the ones whose hash is not the line's, sync
the filesystem once and only then link the rest into `cas/` (law 1). This process
makes the new names durable once per batch of 256 and registers the batch in one
transaction, checking the blobs are still there (law 2); the next batch is staged
meanwhile. A line whose key is already live with the same (or an unstated) hash is
skipped without re-hashing, which is what makes a second run add nothing and an
interrupted run resume quickly. With `move`, originals are removed only after their
records are committed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casfs.blobs.local import LocalBlobStore
from casfs.blobs.staging import StagingFile
from casfs.errors import CasfsError, UnreadableSource
from casfs.ingest import guess_content_type, register_placed, stage_file
from casfs.manifest import Entry, Problem, Skip, read_manifest
from casfs.processes import pid_alive
from casfs.records import NewDocument
from casfs.store import Store

log = logging.getLogger(__name__)

BATCH_FILES = 256
CHUNK = 32  # files per task sent to a worker process
WORKERS = 3  # processes: the staging work is GIL-bound in threads (measured 2.5x)
ERRORS_KEPT = 1000  # errors and warnings kept in the report (memory stays flat);
# every error also goes to the on_error callback


@dataclass
class ImportReport:
    apply: bool
    lines: int = 0
    imported: int = 0  # new documents or new versions registered (apply)
    would_import: int = 0  # preview
    already_imported: int = 0
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    warnings: list[dict[str, Any]] = field(default_factory=list)
    dedup_hits: int = 0
    bytes: int = 0  # bytes of the files imported (or that would be)

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values()) + self.already_imported

    def as_json(self) -> dict[str, Any]:
        return {"apply": self.apply, "lines": self.lines, "imported": self.imported,
                "would_import": self.would_import, "already_imported": self.already_imported,
                "skipped": self.skipped, "skipped_by_reason": dict(self.skipped_by_reason),
                "errors": self.errors, "error_count": self.error_count,
                "warnings": self.warnings, "dedup_hits": self.dedup_hits,
                "bytes": self.bytes}


@dataclass
class Progress:
    manifest: Path
    lines: int
    read_bytes: int  # of all manifests so far
    total_bytes: int  # of all manifests
    imported_bytes: int


_Pending = tuple[Path, Entry, "Future[list[_Placed | str]]", int]  # its chunk's task, index
ErrorSink = Callable[[dict[str, Any]], None]
ProgressSink = Callable[[Progress], None]


def import_manifests(store: Store, manifests: Iterable[Path], *, apply: bool = False,
                     move: bool = False, on_error: ErrorSink | None = None,
                     on_progress: ProgressSink | None = None) -> ImportReport:
    manifests = list(manifests)
    report = ImportReport(apply=apply)
    importer = _Importer(store, report, move=move, on_error=on_error)
    total = sum(m.stat().st_size for m in manifests)
    done = 0
    # forkserver: workers start from a clean interpreter, not a fork of this process
    # with its open catalog connection.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(WORKERS, mp_context=context, initializer=_follow_owner,
                             initargs=(os.getpid(),)) as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="casfs-unstage") as unstager:
        importer.pool, importer.unstager = pool, unstager
        try:
            for manifest in manifests:
                offset = 0
                for outcome, offset in read_manifest(manifest):
                    report.lines += 1
                    importer.take(manifest, outcome)
                    if on_progress and report.lines % 500 == 0:
                        on_progress(Progress(manifest, report.lines, done + offset, total,
                                             report.bytes))
                importer.flush()
                done += offset
        except BaseException:
            importer.abandon()
            raise
    if on_progress:
        on_progress(Progress(manifests[-1] if manifests else Path(), report.lines, total,
                             total, report.bytes))
    return report


class _Importer:
    def __init__(self, store: Store, report: ImportReport, *, move: bool,
                 on_error: ErrorSink | None) -> None:
        if not isinstance(store.blobs, LocalBlobStore):
            raise CasfsError("import-manifest places blobs from worker processes into a "
                             "blob directory; this store's blobs are elsewhere")
        self.store = store
        self.blobs: LocalBlobStore = store.blobs
        self.report = report
        self.move = move
        self.on_error = on_error
        self.chunk: list[tuple[Path, Entry]] = []  # not yet sent to a worker
        self.batch: list[_Pending] = []  # being staged
        self.staged: list[_Pending] = []  # next to commit
        self.pool: Executor | None = None
        self.unstager: Executor | None = None  # removes registered batches' staging files

    def error(self, manifest: Path, line: int, reason: str) -> None:
        item = {"manifest": str(manifest), "line": line, "reason": reason}
        self.report.error_count += 1
        if len(self.report.errors) < ERRORS_KEPT:
            self.report.errors.append(item)
        if self.on_error:
            self.on_error(item)

    def take(self, manifest: Path, outcome: Entry | Skip | Problem) -> None:
        if isinstance(outcome, Skip):
            self.report.skipped_by_reason[outcome.reason] += 1
            return
        if isinstance(outcome, Problem):
            self.error(manifest, outcome.line, outcome.reason)
            return
        entry = outcome
        if self.report.apply:
            # Staging starts soon, in a worker process, while this one reads on; what
            # is imported already is sorted out a chunk at a time (_submit_chunk).
            self.chunk.append((manifest, entry))
            if len(self.chunk) >= CHUNK:
                self._submit_chunk()
            if len(self.batch) >= BATCH_FILES:
                # Double buffering: the workers stage this batch while this process
                # commits the one before it.
                previous, self.staged, self.batch = self.staged, self.batch, []
                self._finish(previous)
            return
        if self._already_imported([entry]) == [True]:
            self.report.already_imported += 1
            return
        try:
            size = entry.path.stat().st_size
        except OSError as e:
            self.error(manifest, entry.line, f"missing file {entry.path}: {e.strerror}")
            return
        self.report.would_import += 1
        self.report.bytes += size

    def _already_imported(self, entries: list[Entry]) -> list[bool]:
        """Whether each entry's key is live with the same (or an unstated) hash: such a
        line adds nothing, and is skipped without being read or hashed."""
        live = self.store.catalog.live_hashes_by_key(
            [(e.artifact_id, e.source_url, e.resolver) for e in entries])
        return [(e.artifact_id, e.source_url, e.resolver) in live
                and e.sha256 in (None, live[(e.artifact_id, e.source_url, e.resolver)])
                for e in entries]

    def _submit_chunk(self) -> None:
        """Send the files read so far to a worker, as one task (one round of pickling)."""
        pending, self.chunk = self.chunk, []
        done = self._already_imported([entry for _, entry in pending])
        self.report.already_imported += sum(done)
        chunk = [item for item, skip in zip(pending, done, strict=True) if not skip]
        if not chunk:
            return
        assert self.pool is not None
        future = self.pool.submit(stage_in_worker,
                                  [(str(e.path), e.sha256) for _, e in chunk],
                                  str(self.blobs.cas_dir), str(self.blobs.tmp_dir),
                                  self.move)
        self.batch += [(manifest, entry, future, i) for i, (manifest, entry) in enumerate(chunk)]

    def flush(self) -> None:
        """Check, commit and register everything staged so far."""
        self._submit_chunk()
        previous, current, self.staged, self.batch = self.staged, self.batch, [], []
        self._finish(previous)
        self._finish(current)

    def abandon(self) -> None:
        """Remove what unfinished batches staged (after an interruption)."""
        batches, self.staged, self.batch, self.chunk = self.staged + self.batch, [], [], []
        for future in {id(f): f for _, _, f, _ in batches}.values():
            try:
                results = future.result()
            except Exception:  # a worker that died: mount start and fsck clean up
                continue
            for result in results:
                if not isinstance(result, str):
                    Path(result.path).unlink(missing_ok=True)

    def _finish(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        keep: list[tuple[Path, Entry, _Placed]] = []
        try:
            self._check(batch, keep)
        except BaseException:
            self.staged = batch + self.staged
            self.abandon()
            raise
        self._commit(keep)

    def _check(self, batch: list[_Pending], keep: list[tuple[Path, Entry, _Placed]]) -> None:
        for manifest, entry, future, index in batch:
            result = future.result()[index]
            if isinstance(result, str):
                self.error(manifest, entry.line, result)
                continue
            if entry.content_length is not None and entry.content_length != result.size \
                    and len(self.report.warnings) < ERRORS_KEPT:
                self.report.warnings.append({
                    "manifest": str(manifest), "line": entry.line,
                    "reason": f"content_length {entry.content_length} but the file has "
                              f"{result.size} bytes"})
            keep.append((manifest, entry, result))

    def _commit(self, keep: list[tuple[Path, Entry, _Placed]]) -> None:
        """Register a batch the workers placed; its staging files go afterwards."""
        stagings = {p.sha256: StagingFile.placed_elsewhere(Path(p.path), p.size, p.sha256)
                    for _, _, p in keep}
        try:
            if keep:  # dedup hits too: a bulk-load mount may have linked one unsynced
                self.blobs.sync()
            documents = [NewDocument(
                resolver=entry.resolver, artifact_id=entry.artifact_id,
                basename=entry.basename, sha256=placed.sha256, bytes=placed.size,
                storage_uri=self.store.blobs.uri(placed.sha256), source_url=entry.source_url,
                content_type=entry.content_type or guess_content_type(entry.basename),
                run_id=entry.run_id, created_at=entry.created_at,
                dedup_hit=not placed.is_new) for _, entry, placed in keep]
            registered = register_placed(
                self.store.blobs, stagings,
                lambda present: self.store.catalog.register_many(documents, present))
        finally:
            # Every staging file, the same bytes twice included; on a thread, since
            # each unlink waits for the filesystem (15% of this process's time when
            # it did them itself) and the next batch needs none of them gone.
            assert self.unstager is not None
            self.unstager.submit(_unstage, [placed.path for _, _, placed in keep])
        for (_, outcome), (_, _, placed) in zip(registered, keep, strict=True):
            if outcome == "unchanged":
                self.report.already_imported += 1
                continue
            self.report.imported += 1
            self.report.bytes += placed.size
            self.report.dedup_hits += not placed.is_new
        if self.move:  # only now that the records are committed
            for _, entry, _ in keep:
                entry.path.unlink(missing_ok=True)


def _unstage(paths: list[str]) -> None:
    """Remove staging files whose blobs are placed and registered (or refused). One
    that cannot be removed is only clutter in `tmp/`: mount start and `fsck --repair`
    remove it, so it is logged, not raised."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove the staging file %s: %s", path, e.strerror)


def manifests_in(paths: Iterable[Path]) -> list[Path]:
    """Manifests named directly, or `manifest.jsonl` inside named run directories."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("manifest.jsonl") if p.is_file())
        else:
            found.append(path)
    return found


_worker_blobs: dict[tuple[str, str], LocalBlobStore] = {}


def _follow_owner(owner: int) -> None:
    """In each worker: exit when the importing process is gone (killed, even with
    SIGKILL), instead of waiting forever for work that will not come."""
    def watch() -> None:
        while pid_alive(owner):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="casfs-owner-watch", daemon=True).start()


@dataclass(frozen=True)
class _Placed:
    path: str  # the named staging file, kept until the record is registered
    size: int
    sha256: str
    is_new: bool


def stage_in_worker(items: list[tuple[str, str | None]], cas: str, tmp: str,
                    move: bool) -> list[_Placed | str]:
    """In a worker process: copy (with `move`: link) each (source, expected sha256) into
    a named staging file, hash it, and place the ones whose hash is as expected, with
    one filesystem sync before any link (law 1). A string says why one was not."""
    blobs = _worker_blobs.get((cas, tmp))
    if blobs is None:
        blobs = _worker_blobs[(cas, tmp)] = LocalBlobStore(Path(cas), Path(tmp),
                                                           unnamed_staging=False)
    results: list[_Placed | str] = []
    staged: list[tuple[int, StagingFile]] = []
    try:
        for source, expected in items:
            result = _stage_one(blobs, source, move, expected)
            if isinstance(result, str):
                results.append(result)
            else:
                staged.append((len(results), result))
                results.append("")
        placed = blobs.place_batch([s for _, s in staged], sync_entries=False)
    except BaseException:
        for _, staging in staged:
            staging.discard()
        raise
    for (index, staging), (sha256, size, is_new) in zip(staged, placed, strict=True):
        os.close(staging.fd)  # the named file stays until the main process registers it
        assert staging.path is not None
        results[index] = _Placed(str(staging.path), size, sha256, is_new)
    return results


def _stage_one(blobs: LocalBlobStore, source: str, move: bool,
               expected: str | None) -> StagingFile | str:
    try:
        staging = blobs.adopt(Path(source)) if move else None
        if staging is None:
            staging = stage_file(blobs, Path(source))
        sha256 = staging.digest()
    except UnreadableSource as e:
        return f"missing file {source}" if e.missing else str(e)
    except FileNotFoundError:  # adopt (--move): the file went away meanwhile
        return f"missing file {source}"
    except OSError as e:
        return f"cannot store {source}: {e.strerror or e}"
    if expected is not None and expected != sha256:
        staging.discard()
        return f"sha256 mismatch: the line says {expected}, {source} hashes to {sha256}"
    return staging
