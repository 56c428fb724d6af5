"""Processes that use a store: mount daemons (their pid files) and staging writers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from casfs.store import StoreLayout


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has finished its work: not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mount_pid_file(layout: StoreLayout, mountpoint: Path) -> Path:
    key = hashlib.sha1(str(mountpoint.absolute()).encode()).hexdigest()[:16]
    return layout.run / f"mount-{key}.json"


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(json.loads(pidfile.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_mounts(layout: StoreLayout) -> list[Path]:
    """Pid files of the mounts of this store whose daemon still runs."""
    return [p for p in layout.run.glob("mount-*.json")
            if (pid := read_pid(p)) is not None and pid_alive(pid)]
