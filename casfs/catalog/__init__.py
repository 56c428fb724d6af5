"""The catalog interface: what the mount and the tools may ask of a catalog.

`open_catalog(url)` opens one: `sqlite:///PATH` (the embedded default, one file in
the store) or `postgresql://USER@HOST/DB` (shared by many hosts). Both are the
same rules (`sql_catalog`) on their own `Database`; nothing outside a backend's
package imports its driver. A catalog object is used by one thread at a time.

Every change that removes or replaces a document closes its row (history) rather
than deleting or updating it; `casfs.catalog.sqlite.schema` describes every table
and column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote, unquote

from casfs.catalog.changes import Change
from casfs.errors import StoreError
from casfs.records import (
    BlobUsage,
    Directory,
    Document,
    DocumentFilter,
    DuplicateGroup,
    Found,
    GcPolicy,
    LastUse,
    NewDocument,
    PathWrite,
    Snapshot,
    Variant,
)

ROOT_INO = 1  # the mount's root; directories and documents have numbers above it
RegisterOutcome = Literal["added", "updated", "unchanged"]
BlobCheck = Callable[[str], bool]  # is the blob with this SHA-256 in place?


class Catalog(Protocol):
    """The contract every catalog keeps; tests/test_catalog_contract.py checks it on
    each backend. Unless a method says otherwise it is its own transaction, raises
    only `casfs.errors` (NotFound for a missing ino, Conflict for a taken path or
    key, CatalogError and its kinds for the database), and sees every commit made
    before it started, by any process or host. "Live" means `valid_to IS NULL`.
    """

    local: bool
    """True when a query answers without a network round trip (the embedded SQLite
    catalog): the mount then asks it on its event loop rather than from a thread."""

    def close(self) -> None:
        """Release the connection; the object is not used afterwards."""
        ...

    @property
    def at(self) -> float | None:
        """The moment this connection shows (Unix seconds), None for the present."""
        ...

    def show_at(self, moment: float) -> None:
        """Time travel: from now on the tree's lookups and listings (directories and
        documents, by inode, name or place) answer as the catalog stood at `moment`:
        what was live then, under the names and in the directories it had then.
        Every write raises CatalogReadOnly."""
        ...

    def write_transaction(self) -> AbstractContextManager[None]:
        """A write transaction for a caller that removes blob bytes (gc, quarantine):
        no registration of a blob it locks (`lock_blob_for_removal`) commits until it
        ends. Methods documented "inside write_transaction" are called in one."""
        ...

    # -- snapshots (time travel) -----------------------------------------------------
    def create_snapshot(self, name: str, at: float, note: str | None = None) -> Snapshot:
        """Name the moment `at`; from now on gc keeps every blob a document live at
        `at` uses. Conflict when the name is taken."""
        ...

    def snapshot(self, name: str) -> Snapshot | None:
        ...

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest moment first."""
        ...

    def delete_snapshot(self, name: str) -> bool:
        """Forget a snapshot (its blobs become gc's to judge again); False when there
        was none of that name."""
        ...

    def snapshot_usage(self, name: str) -> tuple[int, int]:
        """(blobs, bytes) that the documents live at the snapshot's moment use."""
        ...

    def lost_at(self, moment: float) -> tuple[int, float | None]:
        """(how many documents live at `moment` have lost their blob to gc, verify or
        the disk; the moment after which none has, None when none ever did)."""
        ...

    def kept_by_snapshots(self, policy: GcPolicy, now: float) -> list[tuple[str, int, int]]:
        """(snapshot, blobs, bytes) each snapshot keeps that gc would otherwise
        delete under `policy` (for gc's preview)."""
        ...

    def drain_changes(self) -> list[Change] | None:
        """The places (documents and directories) this connection's transactions
        changed and committed since the last call, so that a mount can drop what it
        cached of them; None when there were too many to keep (drop everything)."""
        ...

    # -- the tree ---------------------------------------------------------------
    def reserve_inos(self) -> range:
        """A block of inode numbers no other connection, process or host will ever
        hand out, even if this one never uses them (gaps are fine)."""
        ...

    def get_directory(self, ino: int) -> Directory | None:
        """The resolver or artifact directory with this inode, or None."""
        ...

    def lookup_directory(self, parent_ino: int, name: str) -> Directory | None:
        """The directory called `name` (as the mount shows it) in `parent_ino`."""
        ...

    def list_directories(self, parent_ino: int, after_ino: int, limit: int) -> list[Directory]:
        """Up to `limit` directories of `parent_ino` with inodes above `after_ino`, in
        inode order (readdir pages; an entry is listed once however pages fall)."""
        ...

    def find_directory(self, resolver: str, artifact_id: str | None) -> Directory | None:
        """The directory of a resolver (artifact_id None) or of an artifact, by id."""
        ...

    def ensure_directory(self, resolver: str, artifact_id: str | None) -> Directory:
        """find_directory, or make it (and its resolver's); its name is
        `naming.dir_name_for(id)`, or a collision name when that is taken."""
        ...

    def make_directory(self, parent_ino: int, name: str) -> Directory:
        """mkdir in the mount: a resolver at the root, an artifact in a resolver
        (the id is `naming.identifier_for_dir_name(name)`). NotFound at another
        depth; Conflict when the name or the id has a directory. Empty ones persist."""
        ...

    def remove_directory(self, ino: int) -> None:
        """rmdir: Conflict unless it has no directories and no live documents."""
        ...

    def rename_directory(self, ino: int, new_parent_ino: int, new_name: str) -> None:
        """Rename or move a directory at its own depth (NotFound otherwise); its
        documents follow as new versions (history says "rename")."""
        ...

    def directory_of(self, doc: Document) -> Directory:
        """The artifact directory a document is in (NotFound if it has none)."""
        ...

    def resolve_path(self, path: str) -> Document | None:
        """The live document at a virtual path /<resolver>/<artifact>/<name>."""
        ...

    def path_at(self, resolver: str, artifact_id: str, basename: str) -> str:
        """The virtual path of a place as the mount shows it: the one formatter (the
        directories' own names; for directories that are gone, the names they would
        get)."""
        ...

    def virtual_path(self, doc: Document) -> str:
        """`path_at` of the document's place."""
        ...

    # -- documents --------------------------------------------------------------
    def get_document(self, ino: int) -> Document | None:
        """The live version of the document with this inode, or None."""
        ...

    def lookup_document(self, directory: Directory, basename: str) -> Document | None:
        """The live document at `basename` in an artifact directory."""
        ...

    def list_documents(self, directory: Directory, after_ino: int, limit: int) -> list[Document]:
        """Up to `limit` live documents of an artifact directory with inodes above
        `after_ino`, in inode order."""
        ...

    def history(self, ino: int) -> list[Document]:
        """Every version of a document, oldest first (closed rows have valid_to and
        the change that closed them)."""
        ...

    def last_at_path(self, resolver: str, artifact_id: str, basename: str) -> Document | None:
        """The newest version, live or closed, that was ever at this place."""
        ...

    def find_by_key(self, artifact_id: str, source_url: str, resolver: str) -> Document | None:
        """The live document with the seeds' key (law 4)."""
        ...

    def live_hashes_by_key(self, keys: list[tuple[str, str, str]]
                           ) -> dict[tuple[str, str, str], str]:
        """{(artifact_id, source_url, resolver): sha256} of the keys that are live."""
        ...

    def register(self, new: NewDocument,
                 present: BlobCheck | None = None) -> tuple[Document, RegisterOutcome]:
        """Register a placed blob as a document, idempotent on the key (law 4): the
        same key and bytes change nothing ("unchanged"); other bytes make the next
        version, same path and inode ("updated"); else a new document ("added"),
        named `naming.collision_name(...)` when its basename is taken (law 5).
        `present(sha)` is asked inside the transaction, after the blob is locked
        against removal: BlobsMissing names blobs that are gone (law 2)."""
        ...

    def register_many(self, batch: list[NewDocument], present: BlobCheck | None = None
                      ) -> list[tuple[Document, RegisterOutcome]]:
        """`register` for a batch, in one transaction: all or none."""
        ...

    def write_at_paths(self, writes: list[PathWrite], present: BlobCheck | None = None
                       ) -> list[Document]:
        """The mount's writes of closed files, in one transaction (group commit: one
        commit, one wait for the disk or the server, one announcement for all), with
        the same outcome as making them one after another, in order. For each: the
        document `ino` at its path now holds `new`'s bytes (a new version, or a new
        document with this inode); a different document at the path is closed as
        "replaced"; when `supersede` is the id of the live version, that version
        takes the bytes in place (one version per open file). Returns each write's
        live version, in order. `present` is checked for every blob inside the
        transaction (BlobsMissing names those gone); when any write fails, nothing
        of the call is committed."""
        ...

    def relax_commits(self) -> None:
        """From now on, this connection's commits may return before they are durable
        (a bulk load): a crash may lose the last of them, never half of one, and
        never one made before the last `make_commits_durable`."""
        ...

    def make_commits_durable(self) -> None:
        """Make every commit of this connection so far durable (with one commit that
        waits for the disk or the server), and go on relaxed if it was."""
        ...

    def rename_document(self, ino: int, directory: Directory, basename: str,
                        replace: bool) -> Document:
        """Move a document (a new version, same inode); Conflict when the path is
        taken and not `replace`, or when the target artifact has its key."""
        ...

    def link_document(self, ino: int, directory: Directory, basename: str) -> Document:
        """A second document for the same blob at another path (a new inode); it
        keeps the source URL unless the target artifact has that key already."""
        ...

    def unlink_document(self, ino: int) -> None:
        """Close the live version ("unlink"); the history stays."""
        ...

    def set_mtime(self, ino: int, mtime_ns: int) -> None:
        """utimens: the live version's mtime, changed in place (not a new version)."""
        ...

    def set_directory_mtime(self, ino: int, mtime_ns: int) -> None:
        """Keep a directory's mtime (utimens: `touch -d`, `rsync -a`, `cp -a`); the
        root's is kept too (ROOT_INO). Adding or removing entries does not change it."""
        ...

    def root_mtime_ns(self) -> int | None:
        """The root directory's mtime: the one set, else when its first directory was
        made; None for an empty catalog."""
        ...

    def update_metadata(self, ino: int, *, source_url: str | None = ...,
                        content_type: str | None = ..., run_id: str | None = ...) -> Document:
        """A new version with the given fields changed ("metadata"); Conflict when a
        new source URL is another live document's key."""
        ...

    def add_variant(self, variant: Variant) -> None:
        """Record (or replace) a document's pdf/html/supp variant; its blob is kept."""
        ...

    def variants(self, document_id: int) -> list[Variant]:
        """The variants of one version, by name."""
        ...

    # -- reports ----------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """documents, blobs, logical_bytes, physical_bytes, versions, directories,
        dedup_hits."""
        ...

    # -- the blob ledger and counters (verify, gc, fsck, metrics) -----------------
    def set_blob_state(self, sha256: str, state: str) -> None:
        """present, quarantined, missing or deleted (inside write_transaction)."""
        ...

    def blob_state(self, sha256: str) -> str:
        """A blob's state, or "absent" when the ledger has no row for it."""
        ...

    def blob_size(self, sha256: str) -> int | None:
        """A blob's size as the ledger has it."""
        ...

    def point_records_at(self, base: str) -> int:
        """Set every record's and variant's storage_uri to `base` + "ab/cdef..." (its
        hash), in one transaction, after the blobs moved there; how many records."""
        ...

    def mark_verified(self, sha256s: list[str], when: float) -> None:
        """Record that these blobs were checked at `when` (verify's ledger)."""
        ...

    def adopt_blob(self, sha256: str, size: int) -> None:
        """Record a blob found without a ledger row (fsck's repair), as present."""
        ...

    def correct_blob_size(self, sha256: str, size: int) -> None:
        """Set a blob's size, and that of the documents that use it (fsck)."""
        ...

    def close_records_of_blob(self, sha256: str, change: str) -> None:
        """Close every live document of a blob (inside write_transaction)."""
        ...

    def blobs_registered_since(self, moment: float) -> list[str]:
        """The blobs of live documents whose version began at or after `moment`, once
        each: what a recovery after a crash of the machine checks for a blob file
        that never reached the disk under a record that did. It reads every
        document (no index on the time): for recoveries, not for hot paths."""
        ...

    def bump_counter(self, name: str, amount: int = 1) -> None:
        """Add to a label-less counter (inside write_transaction)."""
        ...

    def add_to_counters(self, amounts: dict[str, int]) -> None:
        """Add to label-less counters, in a transaction of their own."""
        ...

    def counters(self) -> list[tuple[str, str, int]]:
        """Every counter as (name, label text, value), summed over every process and
        host that added to it."""
        ...

    def blobs_to_verify(self, *, sample: float | None = None,
                        limit: int | None = None) -> Iterator[tuple[str, int]]:
        """(sha256, bytes) of blobs believed present, never-verified first, then the
        least recently verified; `sample` keeps about that fraction. A stream: write
        through another connection while reading it."""
        ...

    def garbage_blobs(self, policy: GcPolicy, now: float, after: str, limit: int
                      ) -> list[tuple[str, int, float, LastUse | None]]:
        """One page of garbage (law 3), in hash order after `after`: read whole, so
        that no read stays open across the caller's write transactions (a stale
        snapshot cannot become a write transaction, and gc would never progress)."""
        ...

    def is_garbage(self, sha256: str, policy: GcPolicy, now: float) -> bool:
        """Whether one blob is garbage now (gc's re-check inside its transaction)."""
        ...

    def lock_blob_for_removal(self, sha256: str) -> bool:
        """Inside write_transaction, before gc or a quarantine removes a blob's bytes:
        False when a registration is using the blob right now (leave it this time)."""
        ...

    def blobs_to_verify_bytes(self) -> int:
        """The bytes of every blob believed present (verify's progress total)."""
        ...

    # -- fsck ---------------------------------------------------------------------
    def integrity_problems(self) -> list[str]:
        """What the database's own checks find (none where it enforces them)."""
        ...

    def live_blob_usage(self) -> Iterator[BlobUsage]:
        """Per blob used by live documents: its state, sizes, uses and an inode."""
        ...

    def records_without_directory(self) -> Iterator[Document]:
        """Live documents whose artifact has no directory (not visible: a problem)."""
        ...

    def path_collisions(self) -> Iterator[tuple[str, int]]:
        """Paths with more than one live document (law 5 broken), with the count."""
        ...

    def blob_sizes_with_prefix(self, prefix: str) -> dict[str, int]:
        """{sha256: bytes} of blobs not deleted whose hash starts with `prefix`."""
        ...

    def documents_by_ino(self, after_ino: int, limit: int) -> list[Document]:
        """Up to `limit` live documents (at the moment shown) with inodes above
        `after_ino`, in inode order: the pages `casfs diff` merges."""
        ...

    def iter_live_documents(self) -> Iterator[Document]:
        """Every live document, by id (a stream)."""
        ...

    def blob_refcount(self, sha256: str) -> int:
        """How many live documents use a blob."""
        ...

    def search(self, query: DocumentFilter) -> Iterator[Found]:
        """Live documents passing every filter, oldest first, with their paths."""
        ...

    def blobs_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` stored hashes starting with `prefix` (`casfs where`)."""
        ...

    def duplicate_groups(self, top: int) -> list[DuplicateGroup]:
        """The `top` blobs shared by most bytes saved, with the paths sharing them."""
        ...

    def savings_by_resolver(self) -> list[dict[str, Any]]:
        """Per resolver: documents, logical bytes, and the bytes dedup saved."""
        ...

    def content_type_conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        """Blobs registered under more than one content type."""
        ...


def open_catalog(url: str, *, readonly: bool = False,
                 answer_within: float | None = None) -> Catalog:
    """The catalog at `url`; a StoreError for a scheme casfs does not know.

    `answer_within`: on a catalog server, how many seconds a call may wait for its
    answer before it fails with CatalogUnavailable (None: as long as it takes). An
    embedded catalog has no server to wait for."""
    scheme, _, rest = url.partition(":")
    if scheme == "sqlite":
        from casfs.catalog.sqlite import SqliteCatalog
        return SqliteCatalog(Path(unquote(rest.removeprefix("//"))), readonly=readonly)
    if scheme in ("postgresql", "postgres"):
        from casfs.catalog.postgres import PostgresCatalog
        return PostgresCatalog(url, readonly=readonly, answer_within=answer_within)
    raise StoreError(f"unknown catalog URL {url!r}: use sqlite:///PATH or "
                     "postgresql://USER@HOST/DB")


def sqlite_url(path: Path) -> str:
    return "sqlite://" + quote(str(path.absolute()))
