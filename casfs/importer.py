"""Importing legacy download runs through the one ingest path.

Preview (the default) reads every line, finds every file and says what would be
imported, skipped and why, without hashing or changing anything. Apply stages
files in batches: worker threads copy each file into `tmp/` while hashing it
(with `move`, link it there and remove the original once its record is
committed); the batch is committed with one filesystem sync
(`LocalBlobStore.place_batch`) and registered in one transaction. A line whose
key is already live with the same (or an unstated) hash is skipped without
re-hashing, which is what makes a second run add nothing and an interrupted
run resume quickly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from casfs.blobstore import StagingFile
from casfs.ingest import guess_content_type, register_placed, stage_file
from casfs.manifest import Entry, Problem, Skip, read_manifest
from casfs.records import NewDocument
from casfs.store import Store

BATCH_FILES = 256
WORKERS = 4
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


_Staged = tuple[StagingFile, str] | str  # (staging file, its hash), or what failed
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
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="casfs-import") as pool:
        importer.pool = pool
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
        self.store = store
        self.report = report
        self.move = move
        self.on_error = on_error
        self.batch: list[tuple[Path, Entry, Future[_Staged]]] = []  # being staged
        self.staged: list[tuple[Path, Entry, Future[_Staged]]] = []  # next to commit
        self.pool: ThreadPoolExecutor | None = None

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
        existing = self.store.catalog.find_by_key(entry.artifact_id, entry.source_url,
                                                  entry.resolver)
        if existing is not None and entry.sha256 in (None, existing.sha256):
            self.report.already_imported += 1
            return
        if not self.report.apply:
            try:
                size = entry.path.stat().st_size
            except OSError as e:
                self.error(manifest, entry.line, f"missing file {entry.path}: {e.strerror}")
                return
            self.report.would_import += 1
            self.report.bytes += size
            return
        # Staging starts now, in a worker, while this thread reads the next lines.
        assert self.pool is not None
        self.batch.append((manifest, entry, self.pool.submit(self._stage, entry)))
        if len(self.batch) >= BATCH_FILES:
            # Double buffering: the workers stage this batch while this thread
            # commits the one before it.
            previous, self.staged, self.batch = self.staged, self.batch, []
            self._finish(previous)

    def flush(self) -> None:
        """Check, commit and register everything staged so far."""
        previous, current, self.staged, self.batch = self.staged, self.batch, [], []
        self._finish(previous)
        self._finish(current)

    def abandon(self) -> None:
        """Remove what unfinished batches staged (after an interruption)."""
        batches, self.staged, self.batch = self.staged + self.batch, [], []
        for _, _, future in batches:
            result = future.result()
            if not isinstance(result, str):
                result[0].discard()

    def _finish(self, batch: list[tuple[Path, Entry, Future[_Staged]]]) -> None:
        if not batch:
            return
        keep: list[tuple[Path, Entry, StagingFile]] = []
        try:
            self._check(batch, keep)
        except BaseException:
            for _, _, staging in keep:
                staging.discard()
            self.staged = batch + self.staged
            self.abandon()
            raise
        self._commit(keep)

    def _check(self, batch: list[tuple[Path, Entry, Future[_Staged]]],
               keep: list[tuple[Path, Entry, StagingFile]]) -> None:
        for manifest, entry, future in batch:
            result = future.result()
            if isinstance(result, str):
                self.error(manifest, entry.line, result)
                continue
            staging, sha256 = result
            if entry.sha256 is not None and entry.sha256 != sha256:
                staging.discard()
                self.error(manifest, entry.line,
                           f"sha256 mismatch: the line says {entry.sha256}, "
                           f"{entry.path} hashes to {sha256}")
                continue
            if entry.content_length is not None and entry.content_length != staging.size \
                    and len(self.report.warnings) < ERRORS_KEPT:
                self.report.warnings.append({
                    "manifest": str(manifest), "line": entry.line,
                    "reason": f"content_length {entry.content_length} but the file has "
                              f"{staging.size} bytes"})
            keep.append((manifest, entry, staging))

    def _commit(self, keep: list[tuple[Path, Entry, StagingFile]]) -> None:
        stagings = [staging for _, _, staging in keep]
        try:
            placed = self.store.blobs.place_batch(stagings)
            documents = [NewDocument(
                resolver=entry.resolver, artifact_id=entry.artifact_id,
                basename=entry.basename, sha256=sha256, bytes=size,
                storage_uri=self.store.blobs.uri(sha256), source_url=entry.source_url,
                content_type=entry.content_type or guess_content_type(entry.basename),
                run_id=entry.run_id, created_at=entry.created_at, dedup_hit=not is_new)
                for (_, entry, _), (sha256, size, is_new) in zip(keep, placed, strict=True)]
            by_hash = {sha256: staging for (sha256, _, _), staging in zip(placed, stagings,
                                                                          strict=True)}
            registered = register_placed(
                self.store.blobs, by_hash,
                lambda present: self.store.catalog.register_many(documents, present))
        finally:
            for staging in stagings:
                staging.discard()
        for (_, outcome), (_, size, is_new) in zip(registered, placed, strict=True):
            if outcome == "unchanged":
                self.report.already_imported += 1
                continue
            self.report.imported += 1
            self.report.bytes += size
            self.report.dedup_hits += not is_new
        if self.move:  # only now that the records are committed
            for _, entry, _ in keep:
                entry.path.unlink(missing_ok=True)

    def _stage(self, entry: Entry) -> _Staged:
        """Copy (or move) one file into staging and hash it; a string says what failed."""
        try:
            staging = self.store.blobs.adopt(entry.path) if self.move else None
            if staging is None:
                staging = stage_file(self.store.blobs, entry.path)
            return staging, staging.digest()
        except FileNotFoundError:
            return f"missing file {entry.path}"
        except OSError as e:
            return f"cannot read {entry.path}: {e.strerror or e}"


def manifests_in(paths: Iterable[Path]) -> list[Path]:
    """Manifests named directly, or `manifest.jsonl` inside named run directories."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("manifest.jsonl") if p.is_file())
        else:
            found.append(path)
    return found
