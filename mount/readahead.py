"""The mount's readahead window: how much the kernel asks for in one READ.

A new FUSE mount gets read_ahead_kb = 128 on its backing device, so a first read of
a large file arrives in 128 KiB requests, each a round trip through the daemon.
pyfuse3 on libfuse 3.14 cannot negotiate a larger max_readahead, but root can raise
the window of the mount's own device after it is up, and the kernel then sends
requests of up to that size. The kernel sets the window when the daemon answers
FUSE's INIT, so `casfs mount` writes it once the daemon said it is ready and the
mount answers a statfs, before it returns (nothing of it can race with an
unmount); the device is found in /proc/self/mountinfo.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("casfs.mount")
DEFAULT_KIB = 1024


def device_of(mountpoint: Path) -> str | None:
    """The "major:minor" of the filesystem mounted at `mountpoint`."""
    target = str(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            where = fields[4].replace("\\040", " ").replace("\\011", "\t") \
                .replace("\\012", "\n").replace("\\134", "\\")
            if where == target:
                return fields[2]
    return None


def set_once_up(mountpoint: Path, kib: int) -> None:
    """Once the mount answers (after INIT), set its readahead window."""
    try:
        os.statvfs(mountpoint)
    except OSError as e:
        log.warning("readahead not set: %s does not answer (%s)", mountpoint, e)
        return
    set_readahead(mountpoint, kib)


def set_readahead(mountpoint: Path, kib: int) -> None:
    """Set the mount's readahead window, or say once why not and how an admin can."""
    device = device_of(mountpoint)
    if device is None:
        log.warning("readahead: %s is not in /proc/self/mountinfo", mountpoint)
        return
    knob = Path("/sys/class/bdi") / device / "read_ahead_kb"
    try:
        knob.write_text(f"{kib}\n")
        log.info("readahead of %s set to %d KiB", mountpoint, kib)
    except OSError as e:
        log.warning("readahead stays at the kernel's 128 KiB (%s); as root: echo %d > %s",
                    e.strerror or e, kib, knob)
