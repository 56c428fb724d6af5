"""State of files open for writing: one `OpenWrite` per inode, shared by its handles.

A file being written lives in a staging file until a flush (close) or fsync
finalizes it through `casfs.ingest`. Until the last handle is released the
OpenWrite is the authority for the file's name, size and bytes, so readers of
the open file see what was written and a rename before close keeps its effect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import trio

from casfs.blobstore import StagingFile
from casfs.records import Document


@dataclass
class OpenWrite:
    ino: int
    parent_ino: int
    name: str
    document: Document | None  # the last registered version, None for a new file
    staging: StagingFile | None = None  # bytes not yet finalized, None when clean
    open_handles: int = 0
    unlinked: bool = False
    failed_errno: int | None = None  # a write failed: the next flush reports it
    mtime_ns: int = field(default_factory=time.time_ns)
    metadata: dict[str, str | None] = field(default_factory=dict)  # xattrs set before close
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def dirty(self) -> bool:
        return self.staging is not None

    @property
    def size(self) -> int:
        if self.staging is not None:
            return self.staging.size
        return self.document.bytes if self.document else 0


@dataclass
class Handle:
    """One open() of a file."""

    ino: int
    writable: bool
    sha256: str | None  # the blob read through this handle when the file is clean
    blob_fd: int = -1
