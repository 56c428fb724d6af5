"""The blob store in S3 beside the local one, in one run, through the mount.

    .venv/bin/python contrib/bench/s3.py [--dir DIR] [--big-mib 1024]
        [--small 10000] [--writers 8] [--repeat 1] [--json]

Starts its own S3 server (SeaweedFS, `weed mini`, as the tests do) and mounts a
store on each blob store (both on the embedded SQLite catalog, so that only the
blob store differs) under --dir; leaves nothing behind. Workloads: ingest of one
big file (`cp`) and of small files (2 KiB, by 1 and by N writers, each close
durable and registered); then reads of the big file through a new mount: cold (the
host's cache is empty: the S3 store downloads), warm (the blob is in the cache,
the page cache dropped) and hot (in the page cache). Beside them, two baselines of
the same run: a plain GET of the same object into a local file (the client alone,
no hash, no mount) and the first read of the file on the local store. Beside the
cold read and the plain GET, the CPU seconds each process used (the mount daemon's
split into user and kernel time): on a machine with few cores, shared with the S3
server, that is what bounds a cold read.

With --repeat N the reads and the plain GET run N times, taking turns (local
reads, S3 reads, plain GET, then again), and each figure is the median of its N;
the two goals are also given per turn (the cold read over the GET of the same
turn, the warm read over the local first read of the same turn), so that one
slow moment of this shared machine does not decide a verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import (  # noqa: E402
    cpu_seconds,
    cpu_times,
    daemon_pid,
    drop_caches,
    mounted,
    per_second,
    random_file,
    remove_work,
    timed,
    write_files,
    write_in_parallel,
)

from casfs.blobs.s3 import S3BlobStore  # noqa: E402
from casfs.store import Store  # noqa: E402
from tests.s3 import S3Server  # noqa: E402

CHUNK = 1 << 20


def read_all(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass


def ingest(store: Path, work: Path, big: Path, small: int, writers: int) -> dict[str, float]:
    payload = os.urandom(2048)
    names = [f"f{i:06d}.bin" for i in range(small)]
    out: dict[str, float] = {}
    with mounted(store, work / "mnt") as mnt:
        (mnt / "bench" / "big").mkdir(parents=True)
        seconds = timed(lambda: subprocess.run(["cp", str(big), str(mnt / "bench" / "big")],
                                               check=True))
        out["ingest of the big file, MiB/s"] = big.stat().st_size / seconds / (1 << 20)
        out["small files, 1 writer, files/s"] = per_second(
            lambda: write_files(mnt / "bench" / "one", names, payload))
        out[f"small files, {writers} writers, files/s"] = per_second(
            lambda: write_in_parallel(mnt / "bench", names, payload, writers))
    return out


def reads(store: Path, work: Path, size: int, cache: Path | None, server_pid: int
          ) -> dict[str, float]:
    mib = size / (1 << 20)
    out: dict[str, float] = {}
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)  # this host has never read it
    drop_caches(3)
    with mounted(store, work / "mnt") as mnt:
        path = mnt / "bench" / "big" / "big.bin"
        pid = daemon_pid(store)
        before = (cpu_times(pid), cpu_seconds(server_pid), time.process_time())
        out["first read (cold), MiB/s"] = mib / timed(lambda: read_all(path))
        after = (cpu_times(pid), cpu_seconds(server_pid), time.process_time())
        out["cold read: daemon CPU s, user"] = after[0][0] - before[0][0]
        out["cold read: daemon CPU s, kernel"] = after[0][1] - before[0][1]
        out["cold read: S3 server CPU s"] = after[1] - before[1]
        out["cold read: reader CPU s"] = after[2] - before[2]
        read_all(path)  # a cold read leaves nothing in the page cache (direct I/O)
        out["hot read (page cache), MiB/s"] = mib / timed(lambda: read_all(path))
    if cache is not None:
        drop_caches(3)
        with mounted(store, work / "mnt") as mnt:
            path = mnt / "bench" / "big" / "big.bin"
            out["warm read (host cache), MiB/s"] = mib / timed(lambda: read_all(path))
    return out


def plain_get(bucket: str, prefix: str, work: Path, sha256: str, size: int,
              server_pid: int) -> dict[str, float]:
    """MiB/s of the client alone (the object streamed into a local file), and the
    CPU seconds of the client and the server."""
    client = S3BlobStore(bucket, prefix, work / "get-tmp", work / "get-cache")
    target = work / "plain-get.bin"
    drop_caches(3)

    def get() -> None:
        with open(target, "wb") as f:
            for chunk in client._stream(sha256):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())

    before = (time.process_time(), cpu_seconds(server_pid))
    seconds = timed(get)
    after = (time.process_time(), cpu_seconds(server_pid))
    target.unlink()
    return {"plain GET into a local file, MiB/s": size / seconds / (1 << 20),
            "plain GET: client CPU s": after[0] - before[0],
            "plain GET: S3 server CPU s": after[1] - before[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the reads and the plain GET this many times, taking turns")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-s3-bench-", dir=args.dir))
    server = S3Server().start()
    saved = {key: os.environ.get(key) for key in server.env()}
    os.environ.update(server.env())
    results: dict[str, dict[str, float]] = {}
    per_turn: dict[str, list[float]] = {}
    try:
        big = random_file(work / "big.bin", args.big_mib)
        size = big.stat().st_size
        bucket, prefix = "casfs", uuid.uuid4().hex
        kinds = {"local": None, "s3": f"s3://{bucket}/{prefix}"}
        assert server.process is not None
        for kind, blobs in kinds.items():
            print(f"{kind}: ingest", file=sys.stderr)
            place = work / kind
            place.mkdir()
            Store.init(place / "store", blobs=blobs).close()
            results[kind] = ingest(place / "store", place, big, args.small, args.writers)
        with Store.open(work / "s3" / "store") as store:
            doc = store.catalog.resolve_path("/bench/big/big.bin")
            assert doc is not None
            sha256 = doc.sha256
        turns: list[dict[str, dict[str, float]]] = []
        for turn in range(args.repeat):
            print(f"reads and plain GET, turn {turn + 1} of {args.repeat}", file=sys.stderr)
            this: dict[str, dict[str, float]] = {}
            for kind, blobs in kinds.items():
                place = work / kind
                cache = place / "store" / "cache" if blobs else None
                this[kind] = reads(place / "store", place, size, cache, server.process.pid)
            this["baseline"] = plain_get(bucket, prefix, work, sha256, size,
                                         server.process.pid)
            turns.append(this)
        for kind in ("local", "s3", "baseline"):
            results.setdefault(kind, {})
            for name in turns[0][kind]:
                results[kind][name] = statistics.median(t[kind][name] for t in turns)
        results["baseline"]["first read on the local store, MiB/s"] = \
            results["local"]["first read (cold), MiB/s"]
        per_turn = {
            "cold read / plain GET": [
                t["s3"]["first read (cold), MiB/s"]
                / t["baseline"]["plain GET into a local file, MiB/s"] for t in turns],
            "warm read / local first read": [
                t["s3"]["warm read (host cache), MiB/s"]
                / t["local"]["first read (cold), MiB/s"] for t in turns]}
    finally:
        remove_work(work)
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if args.json:
        print(json.dumps({**results, "turns": per_turn}, indent=2))
        return 0
    print(f"{'workload':40} {'local':>10} {'s3':>18}")
    for workload, value in results["s3"].items():
        base = results["local"].get(workload)
        if not base:
            print(f"{workload:40} {'' if base is None else base:>10} {value:10.2f}")
        else:
            print(f"{workload:40} {base:10.2f} {value:10.2f} ({value / base:4.2f}x)")
    warm = results["s3"]["warm read (host cache), MiB/s"]
    for name, value in results["baseline"].items():
        print(f"{name:40} {value:10.2f}")
    get = results["baseline"]["plain GET into a local file, MiB/s"]
    print(f"cold read on S3 vs plain GET: {results['s3']['first read (cold), MiB/s'] / get:.2f}x"
          f" (goal 0.8x); warm read vs first read on the local store: "
          f"{warm / results['local']['first read (cold), MiB/s']:.2f}x (goal 1x)")
    if args.repeat > 1:
        for name, ratios in per_turn.items():
            print(f"{name}, each turn: " + ", ".join(f"{r:.2f}x" for r in ratios)
                  + f" (median {statistics.median(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
