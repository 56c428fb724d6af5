"""FUSE passthrough: the kernel reads an open document from its blob file itself.

Without it every read of a document is a request to this daemon and a copy of the
bytes through /dev/fuse, and a first read through a new mount runs at a tenth of
the disk's page cache (README, "FUSE passthrough"). With it, an open for reading
names the blob's descriptor as the file's backing file, and the kernel's reads and
mmaps go to the blob directly; no READ reaches the daemon.

pyfuse3 on libfuse 3.14 cannot ask for it; `_passthrough` (C, built at install)
sits beside libfuse and does (its source says how). It must be loaded before
pyfuse3, so `casfs.mount` imports this module first.

The kernel's rules, and how the mount keeps them (per inode, in `OpenFile`):
- All the open descriptors of an inode with a backing file must name the same
  backing file: an `OpenFile` gets one backing id on the open that starts it, and
  every later read-only open of it names that id, until its last release.
- An inode open without passthrough (its page cache in use) refuses a backing file:
  an open gets passthrough only when it is the file's only open handle.
- A file with a backing file cannot take writes (its readers would not see them):
  an open for writing, or a truncate, of such a file fails with ETXTBSY until its
  readers close it, as for a running program. That is why a read-write mount uses
  passthrough only with `-o passthrough`; read-only mounts use it by default.
- Only a whole, checked blob can back a file: a blob still arriving from object
  storage, or a cached one whose check has not ended, is read through the daemon
  (it waits for its bytes, and fails reads the check rejects); once checked, a
  cached one is passed through.
- Backing ids need CAP_SYS_ADMIN: without it passthrough is not asked for, and if
  the kernel still refuses one, passthrough turns off for the mount, with a log
  line; reads then go through the daemon as before.
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType
from typing import Protocol

log = logging.getLogger("casfs.mount")


def _load() -> ModuleType | None:
    """The C module, loaded so that pyfuse3 (loaded after it) binds to its functions;
    None when it is not built or pyfuse3 came first."""
    if "pyfuse3" in sys.modules:
        return None
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_GLOBAL | os.RTLD_NOW)
    try:
        from . import _passthrough  # type: ignore[attr-defined]
    except ImportError:
        return None
    finally:
        sys.setdlopenflags(flags)
    module: ModuleType = _passthrough
    return module


_shim = _load()


def direct_io_may_mmap() -> bool:
    """Whether the kernel agreed to shared mmaps of files opened with direct I/O
    (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6+, asked for by the same module at INIT)."""
    return _shim is not None and bool(_shim.direct_io_mmap())


def _may_open_backing_files() -> bool:
    """Whether this process has CAP_SYS_ADMIN (the kernel's condition for backing
    files), from its effective capabilities."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))
    except OSError:
        pass
    return os.geteuid() == 0


class Backed(Protocol):
    """What passthrough needs of an open file (`OpenFile`)."""

    open_handles: int
    backing_id: int | None

    @property
    def whole_blob_fd(self) -> int | None: ...


class Passthrough:
    """Backing files for one mount's open files."""

    def __init__(self, wanted: bool, asked: bool = False) -> None:
        self.wanted = wanted
        self.asked = asked  # by -o passthrough, rather than a read-only mount's default
        self.opens = 0  # opens answered with a backing file (metrics, tests)
        self._refused = False
        self._told = False

    def ask_kernel(self) -> None:
        """Before pyfuse3.init: ask for passthrough in the INIT reply (not without
        CAP_SYS_ADMIN: no backing file could be opened)."""
        if self.wanted and _shim is not None and _may_open_backing_files():
            _shim.want(True)

    @property
    def on(self) -> bool:
        """Whether opens may name backing files (asked for, and the kernel agreed)."""
        return self.wanted and not self._refused and _shim is not None and \
            bool(_shim.negotiated())

    def why_off(self) -> str | None:
        """Once mounted: why passthrough is off though asked for, or None."""
        if not self.wanted:
            return None
        if _shim is None:
            return "the _passthrough module is not built, or pyfuse3 was loaded before it"
        if not _may_open_backing_files():
            return "the daemon lacks CAP_SYS_ADMIN, which backing files need"
        if not _shim.hooked():
            return "pyfuse3 did not mount through the _passthrough module"
        if not _shim.negotiated():
            return "the kernel did not offer it (needs Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH)"
        return None

    def serve(self, file: Backed, fh: int) -> bool:
        """Answer the read-only open `fh` of `file` (counted in its open handles) with
        its backing file, made now when this is its only handle; False when it is
        read through the daemon instead. A file that has a backing file gets it
        whatever else changed meanwhile: the kernel fails any other open of it."""
        if _shim is None:
            return False
        if file.backing_id is None:
            if not self.on:
                if self.wanted and not self._told:
                    self._told = True  # INIT has been answered by now: say it once
                    log.log(logging.WARNING if self.asked else logging.INFO,
                            "passthrough off: %s; reads go through the daemon",
                            self.why_off() or "refused earlier")
                return False
            fd = file.whole_blob_fd
            if fd is None or file.open_handles != 1:
                return False
            try:
                file.backing_id = _shim.open_backing(fd)
                if not self.opens:
                    log.info("passthrough on: the kernel reads blobs itself")
            except OSError as e:
                self._refused = True
                log.warning("passthrough off for this mount: the kernel refused a backing "
                            "file (%s); reads go through the daemon", e)
                return False
        _shim.reply_passthrough(fh, file.backing_id, False)
        self.opens += 1
        return True

    def release(self, file: Backed) -> None:
        """The file's last handle is gone (the kernel let go of the backing file
        before it sent the release): give its backing id back."""
        if file.backing_id is None or _shim is None:
            return
        backing_id, file.backing_id = file.backing_id, None
        try:
            _shim.close_backing(backing_id)
        except OSError as e:
            log.error("cannot give back backing file %d: %s", backing_id, e)
