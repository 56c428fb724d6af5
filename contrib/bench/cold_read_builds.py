"""A cold read from S3 through builds of casfs taking turns: the experiment behind
the README's "tried and left out" for the cold read.

    git worktree add /tmp/before HEAD~1
    .venv/bin/python contrib/bench/cold_read_builds.py [--dir DIR] [--mib 1024]
        [--runs 3] SOURCE_DIR [SOURCE_DIR ...]

Starts its own S3 server (SeaweedFS), copies one object of --mib MiB in, then for
each run mounts each build in turn (its daemon runs with `PYTHONPATH=SOURCE_DIR`,
so run this from outside the repository: `python -m` looks in the current directory
first) and reads the file once with the host's cache and the kernel's caches empty,
1 MiB at a time as `s3.py` reads. Each line: MiB/s, the daemon's CPU (user and
kernel), the S3 server's, and how much of the blob the daemon read back from its
cache file (`rchar`) and from the disk (`read_bytes`), instead of taking the bytes
its fill had just received. The machine moves between runs: compare builds within
a run, and over several. As root (drops the kernel's caches); leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import (  # noqa: E402
    builds_in_turn,
    cpu_seconds,
    cpu_times,
    daemon_pid,
    drop_caches,
    mounted,
    random_file,
    remove_work,
)

from casfs.store import Store  # noqa: E402
from tests.s3 import BUCKET, S3Server  # noqa: E402

CHUNK = 1 << 20


def io_counters(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/io") as f:
        return {name: int(value) for name, value in (line.split(": ") for line in f)}


def cold_read(store: Path, mountpoint: Path, server_pid: int, mib: int) -> str:
    shutil.rmtree(store / "cache", ignore_errors=True)
    drop_caches(3)
    with mounted(store, mountpoint) as mnt:
        pid = daemon_pid(store)
        cpu, server, io = cpu_times(pid), cpu_seconds(server_pid), io_counters(pid)
        start = time.perf_counter()
        with open(mnt / "b" / "c" / "big.bin", "rb", buffering=0) as f:
            while f.read(CHUNK):
                pass
        seconds = time.perf_counter() - start
        cpu_after, io_after = cpu_times(pid), io_counters(pid)
        server_cpu = cpu_seconds(server_pid) - server
    return (f"{mib / seconds:6.0f} MiB/s   daemon CPU user {cpu_after[0] - cpu[0]:4.2f} s "
            f"kernel {cpu_after[1] - cpu[1]:4.2f} s   S3 server {server_cpu:4.2f} s   "
            f"read back {(io_after['rchar'] - io['rchar']) >> 20} MiB "
            f"(from disk {(io_after['read_bytes'] - io['read_bytes']) >> 20})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", type=Path, metavar="SOURCE_DIR")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-cold-builds-", dir=args.dir))
    server = S3Server().start()
    os.environ.update(server.env())
    assert server.process is not None
    try:
        store = work / "store"
        Store.init(store, blobs=f"s3://{BUCKET}/{uuid.uuid4().hex}").close()
        big = random_file(work / "big.bin", args.mib)
        with mounted(store, work / "mnt") as mnt:
            (mnt / "b" / "c").mkdir(parents=True)
            subprocess.run(["cp", str(big), str(mnt / "b" / "c")], check=True)
        big.unlink()
        for run, build in builds_in_turn(args.builds, args.runs):
            line = cold_read(store, work / "mnt", server.process.pid, args.mib)
            print(f"run {run}  {build!s:30}  {line}", flush=True)
    finally:
        remove_work(work)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
