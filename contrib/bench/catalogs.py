"""The same mount workloads on the SQLite catalog and on PostgreSQL (unix socket and
loopback TCP), in one run, as ratios to SQLite.

    .venv/bin/python contrib/bench/catalogs.py [--dir DIR] [--files 10000]
        [--writers 8] [--records 1000000] [--repeat 1] [--json]

Starts its own PostgreSQL server (the tests' throwaway server: fsync off, so the
server's own disk cost is left out, as on a server with a battery-backed cache)
and mounts a store on each catalog under --dir; leaves nothing behind. Workloads:
small files (2 KiB) written by 1 writer and by N parallel writers (each close
durable and registered), stat of every file after the kernel's caches were
dropped, `ls -l` of the directory, `find`, and per-path lookups at 10,000 vs
--records records.

With --repeat N the mount workloads run N times on each catalog, taking turns (each
turn on fresh stores, and each turn starting with the next catalog, so that none
always goes first), and each figure is the median of its N; the ratio of the
parallel writers to SQLite's is also given per turn. The lookups run once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import (  # noqa: E402
    drop_caches,
    mounted,
    per_second,
    remove_work,
    timed,
    write_files,
    write_in_parallel,
)

from casfs import synthetic  # noqa: E402
from casfs.store import Store  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402


def stat_all(paths: list[Path]) -> None:
    for path in paths:
        os.stat(path)


def workloads(store: Path, work: Path, files: int, writers: int) -> dict[str, float]:
    payload = os.urandom(2048)
    names = [f"f{i:06d}.bin" for i in range(files)]
    out: dict[str, float] = {}
    with mounted(store, work / "mnt") as mnt:
        one = mnt / "bench" / "one"
        out["1 writer, files/s"] = per_second(lambda: write_files(one, names, payload))
        out[f"{writers} writers, files/s"] = per_second(
            lambda: write_in_parallel(mnt / "bench", names, payload, writers))
    with mounted(store, work / "mnt") as mnt:
        drop_caches()
        paths = [mnt / "bench" / "one" / n for n in names]
        out[f"stat of {files:,} fresh names, s"] = timed(lambda: [os.stat(p) for p in paths])
        drop_caches()
        out[f"ls -l of {files:,} entries, first, s"] = timed(lambda: subprocess.run(
            ["ls", "-l", str(mnt / "bench" / "one")], check=True, stdout=subprocess.DEVNULL))
        out["find over the tree, s"] = timed(lambda: subprocess.run(
            ["find", str(mnt)], check=True, stdout=subprocess.DEVNULL))
    return out


def lookups(make_store: Callable[[Path], None], work: Path, records: int) -> dict[str, float]:
    out = {}
    for label, count in (("small", 10_000), ("large", records)):
        path = work / f"scale-{label}"
        make_store(path)
        artifacts = count // 10
        with Store.open(path) as store:
            synthetic.fill(store, resolver="bulk", artifacts=artifacts, per_artifact=10)
        picks = random.Random(2).sample(range(artifacts), min(artifacts, 1000))
        with mounted(path, work / f"mnt-{label}") as mnt:
            drop_caches()
            paths = [mnt / "bulk" / f"W{a:08d}" / "doc005.pdf" for a in picks]
            out[f"lookup per path at {count:,} records, us"] = \
                timed(partial(stat_all, paths)) / len(paths) * 1e6
        shutil.rmtree(path)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the mount workloads this many times, taking turns")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-catalogs-", dir=args.dir))
    server = PostgresServer(tcp=True).start()
    results: dict[str, dict[str, float]] = {}
    per_turn: dict[str, list[float]] = {}
    try:
        kinds: dict[str, Callable[[Path], None]] = {
            "sqlite": lambda path: Store.init(path).close(),
            "pg-socket": lambda path: Store.init(
                path, catalog=server.url(server.create_database())).close(),
            "pg-tcp": lambda path: Store.init(
                path, catalog=server.url(server.create_database(), tcp=True)).close(),
        }
        names = list(kinds)
        turns: dict[str, list[dict[str, float]]] = {kind: [] for kind in names}
        for turn in range(args.repeat):
            for kind in names[turn % len(names):] + names[:turn % len(names)]:
                print(f"{kind}: small files, stat, ls, find (turn {turn + 1} of "
                      f"{args.repeat})", file=sys.stderr)
                place = work / f"{kind}-{turn}"
                place.mkdir()
                kinds[kind](place / "store")
                turns[kind].append(workloads(place / "store", place, args.files,
                                             args.writers))
        for kind, make_store in kinds.items():
            results[kind] = {name: statistics.median(t[name] for t in turns[kind])
                             for name in turns[kind][0]}
            print(f"{kind}: lookups at 10,000 and {args.records:,} records", file=sys.stderr)
            place = work / kind
            place.mkdir()
            results[kind] |= lookups(make_store, place, args.records)
        parallel = f"{args.writers} writers, files/s"
        per_turn = {f"{kind} / sqlite, {parallel}": [
            mine[parallel] / base[parallel]
            for mine, base in zip(turns[kind], turns["sqlite"], strict=True)]
            for kind in names[1:]}
    finally:
        remove_work(work)
        server.stop()
    if args.json:
        print(json.dumps({**results, "turns": per_turn}, indent=2))
        return 0
    print(f"{'workload':44} {'sqlite':>10} {'pg-socket':>18} {'pg-tcp':>18}")
    for workload, base in results["sqlite"].items():
        cells = [f"{base:10.1f}"]
        for kind in ("pg-socket", "pg-tcp"):
            value = results[kind][workload]
            cells.append(f"{value:10.1f} ({value / base:4.2f}x)")
        print(f"{workload:44} " + " ".join(cells))
    if args.repeat > 1:
        for name, ratios in per_turn.items():
            print(f"{name}, each turn: " + ", ".join(f"{r:.2f}x" for r in ratios)
                  + f" (median {statistics.median(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
