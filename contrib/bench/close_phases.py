"""Where a small file's time goes, as its writer sees it: open (create), write and
close, each timed per file, with several writers at once.

    .venv/bin/python contrib/bench/close_phases.py [--dir DIR] [--files 2400]
        [--writers 8] [--catalog sqlite|postgresql] [--distinct] [--bulk]
        [--runs 1] [--json]

Each run mounts a fresh store (PostgreSQL: the tests' throwaway server), writes
--files files of 2 KiB split over --writers threads, each in a directory of its
own, with bare system calls (os.open, os.write, os.close: one request per call,
no buffering), and prints files per second, the median and 90th percentile of
each phase, how much of the machine's CPU was idle meanwhile (/proc/stat), and from
the mount's metrics how many closes shared a commit and how many commits ran back
to back in one trip to a worker thread (group commit, mount/rounds.py). The
files all hold the same bytes unless --distinct; --bulk mounts with
`-o durability=batch`. This is the experiment behind the README's account of why 8
writers wait: the handlers take tens of microseconds, the requests milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import mount_metrics, mounted, remove_work  # noqa: E402

from casfs.store import Store  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

PHASES = ("open", "write", "close")


def cpu_ticks() -> list[int]:
    """The machine's CPU ticks so far: user, nice, system, idle, iowait, ..."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def write_timed(directory: Path, count: int, distinct: bool,
                times: list[tuple[float, float, float]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(2048)
    mine = []
    for i in range(count):
        path = directory / f"f{i:06d}.bin"
        data = payload[:-32] + os.urandom(32) if distinct else payload
        start = time.perf_counter()
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        opened = time.perf_counter()
        os.write(fd, data)
        written = time.perf_counter()
        os.close(fd)
        mine.append((opened - start, written - opened, time.perf_counter() - written))
    times.extend(mine)  # one extend per writer: no lock needed


def one_run(work: Path, args: argparse.Namespace, server: PostgresServer | None
            ) -> dict[str, float]:
    catalog = server.url(server.create_database()) if server else None
    store = work / f"store-{time.time_ns()}"
    Store.init(store, catalog=catalog).close()
    times: list[tuple[float, float, float]] = []
    share = args.files // args.writers
    with mounted(store, work / f"mnt-{time.time_ns()}",
                 durability="batch" if args.bulk else "close") as mountpoint:
        writers = [threading.Thread(target=write_timed, args=(
            mountpoint / "bench" / f"w{k}", share, args.distinct, times))
            for k in range(args.writers)]
        before, start = cpu_ticks(), time.perf_counter()
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        wall, after = time.perf_counter() - start, cpu_ticks()
        metrics = mount_metrics(mountpoint)
    ticks = [b - a for a, b in zip(before, after, strict=True)]
    result = {"files/s": len(times) / wall, "CPU idle %": 100 * ticks[3] / sum(ticks)}
    commits = metrics.get("casfs_mount_registration_commits", 0)
    result["closes per commit"] = \
        metrics.get("casfs_mount_registrations", 0) / commits if commits else 0.0
    result["commits per thread trip"] = \
        commits / metrics["casfs_mount_registration_trips"] \
        if metrics.get("casfs_mount_registration_trips") else 0.0
    for k, phase in enumerate(PHASES):
        values = sorted(t[k] for t in times)
        result[f"{phase} p50 us"] = statistics.median(values) * 1e6
        result[f"{phase} p90 us"] = values[len(values) * 9 // 10] * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--files", type=int, default=2400)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--catalog", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--distinct", action="store_true",
                        help="every file its own bytes (no dedup hits)")
    parser.add_argument("--bulk", action="store_true", help="mount with -o durability=batch")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-close-phases-", dir=args.dir))
    server = PostgresServer().start() if args.catalog == "postgresql" else None
    try:
        runs = [one_run(work, args, server) for _ in range(args.runs)]
    finally:
        remove_work(work)
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for run in runs:
        print(f"{run['files/s']:7.0f} files/s, CPU idle {run['CPU idle %']:3.0f}%   " + "   ".join(
            f"{phase} p50 {run[f'{phase} p50 us']:6.0f} us p90 {run[f'{phase} p90 us']:6.0f}"
            for phase in PHASES) + f"   closes/commit {run['closes per commit']:4.1f}"
            f"   commits/trip {run['commits per thread trip']:4.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
