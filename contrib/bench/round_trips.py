"""What a registration round costs on each catalog, and how many statements a small
file costs the PostgreSQL server through a mount: the experiments behind the
README's account of set-based rounds and filled directories.

    .venv/bin/python contrib/bench/round_trips.py [--dir DIR] [--rounds 300]
        [--files 80] [--writers 8]

1. Idle, on SQLite and on PostgreSQL (the tests' throwaway server, fsync off): the
   wall time and the client's CPU of `Catalog.write_at_paths` for rounds of 1, 4
   and 16 new files, and of 16 again after ANALYZE.
2. Through a mount on PostgreSQL: --files small files written by --writers writers
   into directories the mount made, with the server logging every statement; the
   statements counted by kind.
Everything lives under --dir and is removed at the end.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import mounted, remove_work, write_in_parallel  # noqa: E402

from casfs.records import NewDocument, PathWrite  # noqa: E402
from casfs.store import Store  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

INOS = itertools.count(10**12)  # new inodes for every round of every call


def round_cost(store: Store, per_round: int, rounds: int) -> tuple[float, float]:
    """(ms of wall time, ms of this process's CPU) per round of `per_round` files."""
    catalog = store.catalog
    directory = catalog.ensure_directory("bench", "rounds")  # one directory that grows
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        writes = []
        for _ in range(per_round):
            ino = next(INOS)
            name = f"f{ino}"  # a new name and a new inode: every write is a new file
            sha256 = hashlib.sha256(name.encode()).hexdigest()
            writes.append(PathWrite(ino, directory, name, NewDocument(
                resolver="bench", artifact_id=directory.artifact_id or "", basename=name,
                sha256=sha256, bytes=2048, storage_uri="file:///bench")))
        catalog.write_at_paths(writes, lambda sha256: True)
    return ((time.perf_counter() - wall) / rounds * 1e3,
            (time.process_time() - cpu) / rounds * 1e3)


def statements(server: PostgresServer, work: Path, files: int, writers: int
               ) -> collections.Counter[str]:
    store = work / "mounted"
    Store.init(store, catalog=server.url(server.create_database())).close()
    log = server.dir / "server.log"
    with mounted(store, work / "mnt") as mnt:
        write_in_parallel(mnt / "bench", ["first.bin"], b"x", 1)  # the mount made w0
        for k in range(writers):
            (mnt / "bench" / f"w{k}").mkdir(exist_ok=True)
        settings = ["-c", "ALTER SYSTEM SET log_statement = 'all'", "-c",
                    "SELECT pg_reload_conf()"]
        subprocess.run(["psql", server.url("postgres"), *settings], check=True,
                       capture_output=True)
        time.sleep(0.5)
        start = log.stat().st_size
        write_in_parallel(mnt / "bench", [f"f{i}.bin" for i in range(files)],
                          os.urandom(2048), writers)
        time.sleep(0.5)
        text = log.read_bytes()[start:].decode(errors="replace")
    subprocess.run(["psql", server.url("postgres"), "-c", "ALTER SYSTEM RESET log_statement",
                    "-c", "SELECT pg_reload_conf()"], check=True, capture_output=True)
    found = re.findall(r"LOG:  (?:statement|execute [^:]*): (.*)", text)
    return collections.Counter(" ".join(s.split()[:6]) for s in found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--files", type=int, default=80)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-round-trips-", dir=args.dir))
    server = PostgresServer().start()
    try:
        for kind in ("sqlite", "postgresql"):
            catalog = server.url(server.create_database()) if kind == "postgresql" else None
            with Store.init(work / kind, catalog=catalog) as store:
                for per_round in (1, 4, 16):
                    wall, cpu = round_cost(store, per_round, args.rounds)
                    print(f"{kind:10} round of {per_round:2}: {wall:6.2f} ms, "
                          f"client CPU {cpu:5.2f} ms", flush=True)
                # The same rounds once the server has statistics of the tables (a fresh
                # catalog has none until autovacuum's first visit).
                store.catalog.db.execute("ANALYZE")
                wall, cpu = round_cost(store, 16, args.rounds)
                print(f"{kind:10} round of 16, analyzed: {wall:6.2f} ms, "
                      f"client CPU {cpu:5.2f} ms", flush=True)
        counted = statements(server, work, args.files, args.writers)
        print(f"\n{sum(counted.values())} statements for {args.files} files "
              f"({args.writers} writers, through a mount):")
        for kind, count in counted.most_common():
            print(f"{count:6}  {kind}")
    finally:
        remove_work(work)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
