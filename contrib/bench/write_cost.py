"""Where the time of a small-file write goes: CPU of the mount daemon, of the
PostgreSQL server and of the writers, per file, on SQLite and on PostgreSQL.

    .venv/bin/python contrib/bench/write_cost.py [--dir DIR] [--files 2400]
        [--writers 1 8] [--repeat 1] [--batch] [--distinct] [--json]

Each case mounts a fresh store (the PostgreSQL one on the tests' throwaway server,
fsync off), writes --files files of 2 KiB split over the writers (each close
durable and registered), and reads the processes' CPU time from /proc before and
after. The files all hold the same bytes, so every close after the first is a
dedup hit (a pipeline fetching what it has); with --distinct each file has bytes
of its own, so every close places a new blob. With --batch, SQLite in the bulk-load
mode too (-o durability=batch; timed until an fsync after the last close, one
durability round for them all). On a machine with few cores, the CPU per file of
all the processes is what bounds the files per second: this is the experiment
behind the README's account of 8 writers.

With --server-cpus (e.g. `--server-cpus 1`), the PostgreSQL server runs on those
CPUs and everything else this benchmark starts (the mount daemons, the writers) on
the others, as when the catalog server is a machine of its own: SQLite and
PostgreSQL then get the same CPUs for the mount's host, and the server does not
take its CPU from them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import (  # noqa: E402
    cpu_seconds,
    daemon_pid,
    mounted,
    remove_work,
    write_in_parallel,
)

from casfs.store import Store  # noqa: E402
from casfs.tools.bench import make_durable  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402


def server_pids(server: PostgresServer) -> list[int]:
    """The server's postmaster and every backend it has now."""
    assert server.process is not None
    root = server.process.pid
    children = subprocess.run(["pgrep", "-P", str(root)], capture_output=True,
                              text=True).stdout.split()
    return [root, *map(int, children)]


def server_cpu(server: PostgresServer | None) -> float:
    """CPU seconds of the server's postmaster and every backend it has now."""
    if server is None or server.process is None:
        return 0.0
    total = 0.0
    for pid in server_pids(server):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # ended meanwhile
            total += cpu_seconds(pid)
    return total


def pin_server(server: PostgresServer, cpus: set[int]) -> None:
    """The server's processes (postmaster and every backend it has; later backends
    inherit the postmaster's CPUs) on `cpus`, and this process, whose threads and
    children (mount daemons) inherit it, on the others."""
    mine = os.sched_getaffinity(0)
    others = mine - cpus
    if not cpus <= mine or not others:
        raise SystemExit(f"--server-cpus must name some of CPUs {sorted(mine)} and leave "
                         "one for the mount and the writers")
    for pid in server_pids(server):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(pid, cpus)
    os.sched_setaffinity(0, others)


def one_case(store: Path, work: Path, files: int, writers: int,
             server: PostgresServer | None, durability: str = "close",
             distinct: bool = False) -> dict[str, float]:
    with mounted(store, work / "mnt", durability=durability) as mountpoint:
        pid = daemon_pid(store)
        payload = os.urandom(2048)
        names = [f"f{i:06d}.bin" for i in range(files)]
        before = (cpu_seconds(pid), server_cpu(server), time.process_time())
        start = time.perf_counter()
        done = write_in_parallel(mountpoint / "bench", names, payload, writers, distinct)
        if durability == "batch":
            make_durable(mountpoint / "bench" / "w0")  # counted: durable at the end
        wall = time.perf_counter() - start
        after = (cpu_seconds(pid), server_cpu(server), time.process_time())
    return {"files/s": done / wall,
            "daemon CPU per file, ms": (after[0] - before[0]) / done * 1e3,
            "server CPU per file, ms": (after[1] - before[1]) / done * 1e3,
            "writers' CPU per file, ms": (after[2] - before[2]) / done * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--files", type=int, default=2400)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every case this many times, alternating; medians shown")
    parser.add_argument("--batch", action="store_true",
                        help="also SQLite in the bulk-load mode (-o durability=batch), "
                             "timed until one durability round after the last close")
    parser.add_argument("--distinct", action="store_true",
                        help="every file its own bytes (no dedup hits)")
    parser.add_argument("--server-cpus", type=int, nargs="+", metavar="CPU",
                        help="run the PostgreSQL server on these CPUs and the mounts "
                             "and writers on the others (a server of its own)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-write-cost-", dir=args.dir))
    server = PostgresServer().start()
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        if args.server_cpus:
            pin_server(server, set(args.server_cpus))
        for run in range(args.repeat):  # the cases alternate: noise hits them alike
            for writers in args.writers:
                for kind in ("sqlite", "postgresql", *(["sqlite-batch"] if args.batch else [])):
                    place = work / f"{kind}-{writers}-{run}"
                    place.mkdir()
                    catalog = server.url(server.create_database()) \
                        if kind == "postgresql" else None
                    Store.init(place / "store", catalog=catalog).close()
                    runs.setdefault(f"{kind}, {writers} writer(s)", []).append(one_case(
                        place / "store", place, args.files, writers,
                        server if kind == "postgresql" else None,
                        "batch" if kind == "sqlite-batch" else "close", args.distinct))
    finally:
        remove_work(work)
        server.stop()
    results = {case: {column: statistics.median(r[column] for r in measured)
                      for column in measured[0]} for case, measured in runs.items()}
    for writers in args.writers:  # against the SQLite run just before it
        for kind in ("postgresql", *(["sqlite-batch"] if args.batch else [])):
            pairs = zip(runs[f"{kind}, {writers} writer(s)"],
                        runs[f"sqlite, {writers} writer(s)"], strict=True)
            results[f"{kind}, {writers} writer(s)"]["files/s vs SQLite"] = statistics.median(
                other["files/s"] / lite["files/s"] for other, lite in pairs)
    if args.json:
        print(json.dumps({"medians": results, "runs": runs}, indent=2))
        return 0
    columns = ["files/s", "daemon CPU per file, ms", "server CPU per file, ms",
               "writers' CPU per file, ms", "files/s vs SQLite"]
    title = f"case (median of {args.repeat})"
    print(f"{title:30}" + "".join(f"{c:>28}" for c in columns))
    for case, values in results.items():
        print(f"{case:30}" + "".join(
            f"{values[c]:28.2f}" if c in values else f"{'':28}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
