"""Ingest of one large file through the mount by four kinds of writer, against
`cp + sha256sum + sync` natively, in one run: the experiment behind the README's
"why shutil.copyfile and cp differ".

    .venv/bin/python contrib/bench/write_sizes.py [--dir DIR] [--size-mib 512]
        [--runs 2]

The daemon pays per request, and the WRITE request's size is the writer's: `cp`
writes 128 KiB at a time, `shutil.copyfile` uses `sendfile` (spliced through a 64
KiB pipe), and a program may write 1 MiB or 128 KiB at a time. Each line gives the
speed against native (higher is better) and how many requests the daemon read from
/dev/fuse while that writer wrote a 64 MiB file, counted by `strace -f -P
/dev/fuse`. Through the kernel's page cache every WRITE came with a GETXATTR of
`security.capability` (the kernel checks for set-uid bits to clear before each
write), two requests a write; a write-only open now bypasses the page cache
(direct_io): one request a write, or two when a 1 MiB write's buffer does not
start on a page (the kernel then sends 1 MiB less a few KiB, and the rest).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import (  # noqa: E402
    daemon_pid,
    mounted,
    native_ingest,
    random_file,
    remove_work,
    timed,
)

from casfs.store import Store  # noqa: E402

Writer = Callable[[Path, Path], None]


def writes_of(size: int) -> Writer:
    def write(source: Path, target: Path) -> None:
        with source.open("rb") as src, target.open("wb") as dst:
            while chunk := src.read(size):
                dst.write(chunk)
    return write


def with_cp(source: Path, target: Path) -> None:
    subprocess.run(["cp", str(source), str(target)], check=True)


def with_shutil(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


WRITERS: dict[str, Writer] = {
    "cp": with_cp,
    "shutil.copyfile": with_shutil,
    "writes of 1 MiB": writes_of(1 << 20),
    "writes of 128 KiB": writes_of(128 << 10),
}


def requests(pid: int, write: Callable[[], None]) -> int:
    """The daemon's reads of /dev/fuse while `write` runs (WRITE requests, mostly)."""
    trace = subprocess.Popen(["strace", "-f", "-c", "-e", "trace=read", "-P", "/dev/fuse",
                              "-p", str(pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    write()
    trace.send_signal(2)
    _, report = trace.communicate(timeout=30)
    found = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+\s+)?read$", report, re.M)
    if found is None:
        return -1
    calls, errors = int(found.group(1)), int(found.group(2) or 0)
    return calls - errors  # a read that found nothing waiting (EAGAIN) is no request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-write-sizes-", dir=args.dir))
    try:
        big, small = work / "big.bin", work / "small.bin"
        random_file(big, args.size_mib)
        random_file(small, 64)
        store = work / "store"
        Store.init(store).close()
        with mounted(store, work / "mnt") as mnt:
            target = mnt / "bench" / "w"
            target.mkdir(parents=True)
            counts = {name: requests(daemon_pid(store), partial(
                write, small, target / f"count-{name.replace(' ', '-')}.bin"))
                for name, write in WRITERS.items()}
            for run in range(args.runs):
                baseline = native_ingest(big, work / "native.bin")
                for name, write in WRITERS.items():
                    copy = target / f"{run}-{name.replace(' ', '-')}.bin"
                    seconds = timed(partial(write, big, copy))
                    print(f"run {run + 1}: {name:18} {baseline / seconds:5.2f}x of native "
                          f"({seconds:.2f} s against {baseline:.2f} s); "
                          f"{counts[name]} reads of /dev/fuse for 64 MiB", flush=True)
    finally:
        remove_work(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
