"""What one open() of a file in the mount holds: little, since the bytes of a file
are its inode's (`open_files.OpenFile`), whichever descriptor reads them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Handle:
    ino: int
    writable: bool
    content: bytes | None = None  # a generated file (/.casfs/metrics): its snapshot
    failures_known: int = 0  # a bulk load's failed registrations it has heard of
