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
with Python's open, write and close, as `peers.py` writes them; then 1,000 more by
one writer while the mount's daemon's CPU time is read from /proc (its CPU per
file). As root, with the kernel's `fuse` trace events, it also counts the requests a
file costs in each (LOOKUP, CREATE, WRITE, ...) and times each from the kernel
sending it to the reply (the median by kind). Then, without a mount, it times what
every durable close of a single writer waits for at the least: the catalog
transaction that registers one file (SQLite, as the mount commits it), in this
process, with no FUSE request and no thread around it; and a trip from a trio event
loop to a worker thread and back (`trio.to_thread.run_sync` of nothing), which the
mount pays at least once a close, since a commit may not block its event loop.
Prints files/s for every turn and the medians, and what the floor, that transaction
and that trip leave: the most files/s one writer could reach with durable closes if
nothing else cost anything. (A bulk load's close no longer waits for its
registration, `mount/closes_behind.py`: the relaxed transaction is printed for
comparison.) Deleting many files slows the creates of the next minutes on ext4
without a journal (README, "The disk's share"): let --dir rest before a run.
Everything lives under --dir and is removed at the end; every mount is unmounted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import trio  # noqa: E402
from mount_workloads import (  # noqa: E402
    cpu_seconds,
    daemon_pid,
    mounted,
    remove_work,
    serving,
    write_in_parallel,
)
from round_trips import round_cost  # noqa: E402

from casfs.store import Store  # noqa: E402

TRACING = Path("/sys/kernel/tracing")
SEND_EVENT = TRACING / "events" / "fuse" / "fuse_request_send" / "enable"
END_EVENT = TRACING / "events" / "fuse" / "fuse_request_end" / "enable"
TRACE_LINE = re.compile(r"\s(\d+\.\d+): fuse_request_(send|end): connection \d+ "
                        r"req (\d+)(?: opcode \d+ \(FUSE_(\w+)\))?")
COUNTED_FILES = 200
CPU_FILES = 1000  # files a daemon's CPU per file is read over (clock ticks of 10 ms)
Served = tuple[Path, int]  # a mountpoint, and the pid of the process serving it
Mount = Callable[[Path], AbstractContextManager[Served]]


def null_mount(work: Path) -> AbstractContextManager[Served]:
    @contextmanager
    def mount() -> Iterator[Served]:
        mountpoint = work / "mnt-null"
        with serving([sys.executable, str(Path(__file__).with_name("null_fs.py")),
                      str(mountpoint)], mountpoint) as pid:
            yield mountpoint, pid
    return mount()


def casfs_mount(durability: str) -> Mount:
    @contextmanager
    def mount(work: Path) -> Iterator[Served]:
        store = work / f"store-{durability}-{time.monotonic_ns()}"
        Store.init(store).close()
        with mounted(store, work / "mnt-casfs", durability=durability) as mnt:
            yield mnt, daemon_pid(store)
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


@dataclass
class RequestKind:
    per_file: float  # requests of this kind a file
    median_us: float  # from the kernel sending it to the reply, as the kernel sees it


def requests_of_a_file(root: Path, payload: bytes) -> dict[str, RequestKind] | None:
    """The FUSE requests one writer's small file costs, by kind, with how long each
    kind took at the median (None where the trace events cannot be used: not root,
    or a kernel without them)."""
    if not (os.access(SEND_EVENT, os.W_OK) and os.access(END_EVENT, os.W_OK)):
        return None
    names = [f"c{i:05d}" for i in range(COUNTED_FILES)]
    (root / "w0").mkdir(parents=True)
    (TRACING / "trace").write_text("")
    for event in (SEND_EVENT, END_EVENT):
        event.write_text("1")
    try:
        write_in_parallel(root, names, payload, 1, distinct=True)
    finally:
        for event in (SEND_EVENT, END_EVENT):
            event.write_text("0")
    sent: dict[int, tuple[str, float]] = {}
    took: dict[str, list[float]] = collections.defaultdict(list)
    for line in (TRACING / "trace").read_text().splitlines():
        found = TRACE_LINE.search(line)
        if found is None:
            continue
        at, kind, request, opcode = found.groups()
        if kind == "send":
            sent[int(request)] = (opcode, float(at))
        elif int(request) in sent:
            opcode, since = sent.pop(int(request))
            took[opcode].append((float(at) - since) * 1e6)
    return {opcode: RequestKind(round(len(times) / COUNTED_FILES, 2),
                                round(statistics.median(times)))
            for opcode, times in sorted(took.items(), key=lambda kv: -len(kv[1]))}


def daemon_cpu_ms(mountpoint: Path, pid: int, payload: bytes) -> float:
    """CPU time (user and system, ms) the process `pid` serving `mountpoint` spends
    on one writer's small file, over CPU_FILES files."""
    names = [f"u{i:05d}" for i in range(CPU_FILES)]
    (mountpoint / "cpu" / "w0").mkdir(parents=True)
    before = cpu_seconds(pid)
    write_in_parallel(mountpoint / "cpu", names, payload, 1, distinct=True)
    return (cpu_seconds(pid) - before) / CPU_FILES * 1e3


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
    kinds: dict[str, dict[str, RequestKind] | None] = {}
    cpu: dict[str, list[float]] = {name: [] for name in order}
    try:
        for turn in range(args.repeat):
            for name in order[turn % len(order):] + order[:turn % len(order)]:
                print(f"turn {turn + 1}: {name} ...", file=sys.stderr, flush=True)
                with MOUNTS[name](work) as (mnt, pid):
                    rates[name]["1 writer"].append(
                        files_per_second(mnt / "one", names, payload, 1))
                    rates[name]["8 writers"].append(
                        files_per_second(mnt / "eight", names, payload, 8))
                    cpu[name].append(daemon_cpu_ms(mnt, pid, payload))
                    if turn == 0:
                        kinds[name] = requests_of_a_file(mnt / "counted", payload)
        commit_ms = {"durable": registration_ms(work, True),
                     "bulk load": registration_ms(work, False)}
        trip_ms = thread_trip_ms()
    finally:
        remove_work(work)
    floor_ms = 1e3 / statistics.median(rates[order[0]]["1 writer"])
    ceilings = {kind: 1e3 / (floor_ms + ms + trip_ms) for kind, ms in commit_ms.items()}
    if args.json:
        requests = {name: None if got is None else {k: asdict(v) for k, v in got.items()}
                    for name, got in kinds.items()}
        print(json.dumps({"files/s": rates, "requests of a file": requests,
                          "daemon CPU ms per file (one writer)": cpu,
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
        print(f"  daemon CPU per file (one writer): median "
              f"{statistics.median(cpu[name]):.2f} ms   turns: "
              + ", ".join(f"{v:.2f}" for v in cpu[name]))
        got = kinds.get(name)
        if got:
            total = sum(k.per_file for k in got.values())
            print(f"  requests per file (one writer): {total:.1f}, each at the median:")
            for opcode, kind in got.items():
                print(f"    {opcode:10} {kind.per_file:4.1f} x {kind.median_us:6,.0f} us")
    print(f"one writer: the floor's requests take {floor_ms:.3f} ms a file")
    print(f"  a trip to a worker thread and back takes {trip_ms:.3f} ms (mean)")
    print(f"  registering one file (durable) takes {commit_ms['durable']:.3f} ms in-process "
          f"(mean): with the floor and one trip, at most {ceilings['durable']:,.0f} files/s "
          f"for one writer if nothing else cost anything")
    print(f"  registering one file (relaxed, as in a bulk load, whose closes no longer wait "
          f"for it) takes {commit_ms['bulk load']:.3f} ms in-process (mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
