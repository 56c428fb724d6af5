"""The parts of a cold read from an S3 store, each alone, with the CPU each costs:
the experiment behind the README's account of the cold-read goal.

    .venv/bin/python contrib/bench/cold_read_parts.py [--dir DIR] [--mib 1024]
        [--runs 2]

Starts its own S3 server (SeaweedFS) and mounts a store on it; leaves nothing
behind; as root (it drops the kernel's caches). For one object of --mib MiB, each
run measures: a plain GET into a local file (the client alone); the cache fill
alone (download, hash, write into a cache directory, no FUSE); a cold read through
a new mount; and a cold read through a new mount that starts reading only once the
fill has ended (the readers and the fill then cannot slow each other). Each line
gives MiB/s and the CPU seconds (user/kernel) of the process doing the work, and
the S3 server's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import (  # noqa: E402
    cpu_seconds,
    cpu_times,
    daemon_pid,
    drop_caches,
    mounted,
    remove_work,
)

from casfs.blobs.s3 import S3BlobStore  # noqa: E402
from casfs.store import Store  # noqa: E402
from tests.s3 import BUCKET, S3Server  # noqa: E402

CHUNK = 1 << 20


def measure(work: Callable[[], None], pid: int, server_pid: int, mib: int, name: str) -> None:
    before = (cpu_times(pid), cpu_seconds(server_pid))
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    after = (cpu_times(pid), cpu_seconds(server_pid))
    print(f"{name:46} {mib / seconds:7.0f} MiB/s   CPU user {after[0][0] - before[0][0]:5.2f} s"
          f"  kernel {after[0][1] - before[0][1]:5.2f} s   S3 server "
          f"{after[1] - before[1]:5.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--pin-daemon", type=int, metavar="CPU",
                        help="run every thread of the mount daemon on this CPU only")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-cold-parts-", dir=args.dir))
    server = S3Server().start()
    os.environ.update(server.env())
    assert server.process is not None
    server_pid, mib = server.process.pid, args.mib
    try:
        store = work / "store"
        Store.init(store, blobs=f"s3://{BUCKET}/{uuid.uuid4().hex}").close()
        big = work / "big.bin"
        digest = hashlib.sha256()
        with open(big, "wb") as f:
            for _ in range(mib):
                chunk = os.urandom(CHUNK)
                f.write(chunk)
                digest.update(chunk)
        with mounted(store, work / "mnt") as mnt:
            (mnt / "b" / "c").mkdir(parents=True)
            subprocess.run(["cp", str(big), str(mnt / "b" / "c")], check=True)
        big.unlink()
        sha256 = digest.hexdigest()
        with Store.open(store) as opened:
            blobs = opened.blobs
            assert isinstance(blobs, S3BlobStore)
            bucket, prefix = blobs.bucket, blobs.prefix

        def plain_get() -> None:
            client = S3BlobStore(bucket, prefix, work / "get-tmp", work / "get-cache")
            with open(work / "plain.bin", "wb") as f:
                for chunk in client._stream(sha256):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            (work / "plain.bin").unlink()

        def fill_alone() -> None:
            shutil.rmtree(work / "fill-cache", ignore_errors=True)
            client = S3BlobStore(bucket, prefix, work / "get-tmp", work / "fill-cache")
            fd, arrival = client.open_blob_early(sha256, mib * CHUNK)
            if arrival is not None:
                arrival.wait_for(mib * CHUNK)
            os.close(fd)

        def cold_read(wait_for_fill: bool) -> None:
            shutil.rmtree(store / "cache", ignore_errors=True)
            drop_caches(3)
            with mounted(store, work / "mnt") as mnt:
                path = mnt / "b" / "c" / "big.bin"

                def read() -> None:
                    with open(path, "rb", buffering=0) as f:
                        if wait_for_fill:
                            f.read(1)  # starts the download
                            while any((store / "cache").glob(".fill-*")):
                                time.sleep(0.05)
                        while f.read(CHUNK):
                            pass
                name = "cold read after the fill" if wait_for_fill else "cold read"
                if args.pin_daemon is not None:  # every thread of the daemon on one CPU
                    subprocess.run(["taskset", "-a", "-p", "-c", str(args.pin_daemon),
                                    str(daemon_pid(store))], check=True,
                                   stdout=subprocess.DEVNULL)
                    name += ", daemon on one CPU"
                measure(read, daemon_pid(store), server_pid, mib, name + " (daemon)")

        for _ in range(args.runs):
            drop_caches(3)
            measure(plain_get, os.getpid(), server_pid, mib, "plain GET (client)")
            drop_caches(3)
            measure(fill_alone, os.getpid(), server_pid, mib, "cache fill alone (client)")
            cold_read(False)
            cold_read(True)
    finally:
        remove_work(work)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
