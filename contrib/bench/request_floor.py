"""How fast small files can be written through any pyfuse3 filesystem on this
machine, beside casfs: the experiment behind the README's account of the small-file
goals that no Python FUSE filesystem here reaches.

    .venv/bin/python contrib/bench/request_floor.py [--dir DIR] [--files 3000]
        [--repeat 3] [--json]

Three mounts take turns (each turn starts with the next one, each mount fresh):
`null_fs.py` (answers every request at once and keeps no bytes: the floor of
pyfuse3 and trio), casfs in a bulk load (`-o durability=batch`) and casfs as it
mounts by default (every close durable). In each, --files files of 2 KiB are
written by one writer and then by 8 writers at once, each in a directory of its own,
with Python's open, write and close, as `peers.py` writes them. As root, with the
kernel's `fuse` trace events, it also counts the requests a file costs in each
(LOOKUP, CREATE, WRITE, ...). Then, without a mount, it times what every close
of a single writer waits for at the least: the catalog transaction that registers one
file (SQLite, as the mount commits it: durable, and relaxed as in a bulk load), in
this process, with no FUSE request and no thread around it; and a trip from a trio
event loop to a worker thread and back (`trio.to_thread.run_sync` of nothing), which
the mount pays at least once a close, since a commit may not block its event loop.
Prints files/s for every turn and the medians, and what the floor, that transaction
and that trip leave: the most files/s one writer could reach if nothing else cost
anything.
Everything lives under --dir and is removed at the end; every mount is unmounted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import trio  # noqa: E402
from mount_workloads import mounted, remove_work, serving, write_in_parallel  # noqa: E402
from round_trips import round_cost  # noqa: E402

from casfs.store import Store  # noqa: E402

TRACING = Path("/sys/kernel/tracing")
SEND_EVENT = TRACING / "events" / "fuse" / "fuse_request_send" / "enable"
COUNTED_FILES = 200
Mount = Callable[[Path], AbstractContextManager[Path]]


def null_mount(work: Path) -> AbstractContextManager[Path]:
    @contextmanager
    def mount() -> Iterator[Path]:
        mountpoint = work / "mnt-null"
        with serving([sys.executable, str(Path(__file__).with_name("null_fs.py")),
                      str(mountpoint)], mountpoint):
            yield mountpoint
    return mount()


def casfs_mount(durability: str) -> Mount:
    @contextmanager
    def mount(work: Path) -> Iterator[Path]:
        store = work / f"store-{durability}-{time.monotonic_ns()}"
        Store.init(store).close()
        with mounted(store, work / "mnt-casfs", durability=durability) as mnt:
            yield mnt
    return mount


MOUNTS: dict[str, Mount] = {
    "null_fs (pyfuse3 floor)": null_mount,
    "casfs -o durability=batch": casfs_mount("batch"),
    "casfs (durable close)": casfs_mount("close"),
}


def files_per_second(root: Path, names: list[str], payload: bytes, writers: int) -> float:
    start = time.perf_counter()
    done = write_in_parallel(root, names, payload, writers, distinct=True)
    return done / (time.perf_counter() - start)


def requests_per_file(root: Path, payload: bytes) -> dict[str, float] | None:
    """The FUSE requests one writer's small file costs, by kind (None where the
    trace events cannot be used: not root, or a kernel without them)."""
    if not os.access(SEND_EVENT, os.W_OK):
        return None
    names = [f"c{i:05d}" for i in range(COUNTED_FILES)]
    (root / "w0").mkdir(parents=True)
    (TRACING / "trace").write_text("")
    SEND_EVENT.write_text("1")
    try:
        write_in_parallel(root, names, payload, 1, distinct=True)
    finally:
        SEND_EVENT.write_text("0")
    kinds: collections.Counter[str] = collections.Counter()
    for line in (TRACING / "trace").read_text().splitlines():
        if "opcode" in line and "(FUSE_" in line:
            kinds[line.split("(FUSE_", 1)[1].split(")", 1)[0]] += 1
    return {kind: round(n / COUNTED_FILES, 2) for kind, n in kinds.most_common()}


def registration_ms(work: Path, durable: bool, rounds: int = 2000) -> float:
    """Mean wall time (ms) of `Catalog.write_at_paths` for a round of one new file
    (`round_trips.round_cost`): each close of a single writer waits for one, as the
    mount runs it. The mean, not the median: the commits that also checkpoint
    SQLite's log (every thousand pages or so) are part of what a stream of closes
    waits for."""
    with Store.init(work / f"commits-{durable}") as store:
        if not durable:
            store.catalog.relax_commits()
        round_cost(store, 1, 200)  # warming up
        return round_cost(store, 1, rounds)[0]


def thread_trip_ms(trips: int = 3000) -> float:
    """Mean wall time (ms) of a trip from the trio event loop to a worker thread
    and back, doing nothing there."""
    async def trip_times() -> list[float]:
        times = []
        for _ in range(trips):
            start = time.perf_counter()
            await trio.to_thread.run_sync(lambda: None)
            times.append(time.perf_counter() - start)
        return times
    return statistics.mean(trio.run(trip_times)[200:]) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-floor-", dir=args.dir))
    payload = os.urandom(2048)
    names = [f"f{i:06d}.bin" for i in range(args.files)]
    order = list(MOUNTS)
    rates: dict[str, dict[str, list[float]]] = {
        name: {"1 writer": [], "8 writers": []} for name in order}
    counts: dict[str, dict[str, float] | None] = {}
    try:
        for turn in range(args.repeat):
            for name in order[turn % len(order):] + order[:turn % len(order)]:
                print(f"turn {turn + 1}: {name} ...", file=sys.stderr, flush=True)
                with MOUNTS[name](work) as mnt:
                    rates[name]["1 writer"].append(
                        files_per_second(mnt / "one", names, payload, 1))
                    rates[name]["8 writers"].append(
                        files_per_second(mnt / "eight", names, payload, 8))
                    if turn == 0:
                        counts[name] = requests_per_file(mnt / "counted", payload)
        commit_ms = {"durable": registration_ms(work, True),
                     "bulk load": registration_ms(work, False)}
        trip_ms = thread_trip_ms()
    finally:
        remove_work(work)
    floor_ms = 1e3 / statistics.median(rates[order[0]]["1 writer"])
    ceilings = {kind: 1e3 / (floor_ms + ms + trip_ms) for kind, ms in commit_ms.items()}
    if args.json:
        print(json.dumps({"files/s": rates, "requests per file": counts,
                          "registration ms (mean)": commit_ms, "floor ms per file": floor_ms,
                          "thread trip ms (mean)": trip_ms,
                          "one writer at most, files/s": ceilings}, indent=2))
        return 0
    for name in order:
        print(name)
        for load, values in rates[name].items():
            turns = ", ".join(f"{v:,.0f}" for v in values)
            print(f"  {load:10} median {statistics.median(values):7,.0f} files/s"
                  f"   turns: {turns}")
        if counts.get(name):
            total = sum(counts[name].values())  # type: ignore[union-attr]
            print(f"  requests per file (one writer): {total:.1f}  {counts[name]}")
    print(f"one writer: the floor's requests take {floor_ms:.3f} ms a file")
    print(f"  a trip to a worker thread and back takes {trip_ms:.3f} ms (mean)")
    for kind, ms in commit_ms.items():
        print(f"  registering one file ({kind}) takes {ms:.3f} ms in-process (mean): with "
              f"the floor and one trip, at most {ceilings[kind]:,.0f} files/s for one writer "
              f"if nothing else cost anything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
