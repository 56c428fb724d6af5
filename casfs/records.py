"""The shapes the catalog hands out: plain frozen dataclasses, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Directory:
    """A resolver directory (artifact_id is None) or an artifact directory."""

    ino: int
    parent_ino: int
    name: str
    resolver: str
    artifact_id: str | None
    created_at: float
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Document:
    """One version of a document. Live while `valid_to` is None."""

    id: int
    ino: int
    artifact_id: str
    resolver: str
    source_url: str | None
    basename: str
    content_type: str | None
    bytes: int
    sha256: str
    storage_uri: str
    run_id: str | None
    created_at: float
    updated_at: float
    mtime_ns: int
    valid_from: float
    valid_to: float | None
    change: str | None


@dataclass(frozen=True, slots=True)
class NewDocument:
    """What a caller knows about a document it is registering; the blob is already stored."""

    resolver: str
    artifact_id: str
    basename: str
    sha256: str
    bytes: int
    storage_uri: str
    source_url: str | None = None
    content_type: str | None = None
    run_id: str | None = None
    created_at: float | None = None  # defaults to now
    mtime_ns: int | None = None  # defaults to created_at
    dedup_hit: bool = False  # the blob was already stored; counted in the catalog


@dataclass(frozen=True, slots=True)
class PathWrite:
    """The mount's write of one closed file: document `ino`, at `basename` in
    `directory`, now holds the bytes `new` describes. `supersede` is the id of a
    version the same open file registered earlier (see Catalog.write_at_paths)."""

    ino: int
    directory: Directory
    basename: str
    new: NewDocument
    supersede: int | None = None

    @property
    def place(self) -> tuple[str, str | None, str]:
        """(resolver, artifact_id, basename): where the document will live."""
        return (self.directory.resolver, self.directory.artifact_id, self.basename)


@dataclass(frozen=True, slots=True)
class Variant:
    document_id: int
    variant: str
    storage_uri: str
    bytes: int
    content_type: str | None
    sha256: str


@dataclass(frozen=True, slots=True)
class DocumentFilter:
    """What `casfs search` narrows live documents by; None means any."""

    resolver: str | None = None
    content_type: str | None = None
    artifact_glob: str | None = None
    url_substring: str | None = None
    run_id: str | None = None
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    min_size: int | None = None
    max_size: int | None = None
    artifact_id: str | None = None
    sha256: str | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Found:
    """A document together with its virtual path."""

    document: Document
    path: str


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    sha256: str
    bytes: int
    references: int
    paths: list[str]

    @property
    def saved_bytes(self) -> int:
        return (self.references - 1) * self.bytes


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """How long closed history of some documents is kept (overrides keep_history).
    A rule matches when every field it names matches; the first match wins."""

    keep_history: float
    resolver: str | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class GcPolicy:
    grace: float  # seconds a blob must have existed before it may be deleted
    keep_history: float  # seconds closed records keep their blobs
    rules: tuple[RetentionRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A named moment whose blobs gc keeps (time travel)."""

    name: str
    at: float
    note: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class BlobUsage:
    """How live records use one blob (what fsck compares with the blob itself)."""

    sha256: str
    state: str
    record_bytes: int
    blob_bytes: int
    records: int
    example_ino: int


class LastUse(NamedTuple):
    """Where the record that last used a blob was, and when it was closed (gc)."""

    resolver: str
    artifact_id: str
    basename: str
    valid_to: float | None
