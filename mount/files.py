"""What one open() of a file in the mount holds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Handle:
    ino: int
    writable: bool
    sha256: str | None  # the blob read through this handle when the file is clean
    blob_fd: int = -1
    content: bytes | None = None  # a generated file (/.casfs/metrics): its snapshot
