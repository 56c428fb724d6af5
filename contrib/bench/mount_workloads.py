"""What the mount benchmarks share: timing, dropping the kernel's caches, a mount
that is always unmounted, and small files written by one or by several writers.

Imported by the scripts beside it (`python contrib/bench/NAME.py` puts this folder
first on the import path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from casfs.mount import daemon
from casfs.mount.options import MountOptions
from casfs.processes import read_pid

TICK = os.sysconf("SC_CLK_TCK")


def timed(action: Callable[[], object]) -> float:
    """Seconds `action()` took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def cat(path: Path) -> float:
    """Seconds `cat` took to read `path` (what a user's first read is)."""
    return timed(lambda: subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL,
                                        check=True))


def per_second(action: Callable[[], int]) -> float:
    """How many things `action()` did (its result) per second."""
    start = time.perf_counter()
    count = action()
    return count / (time.perf_counter() - start)


def drop_caches(level: int = 2) -> None:
    """Write back, then drop the kernel's names and attributes (2) or also the page
    cache (3). Needs root."""
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(f"{level}\n")


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def daemon_pid(store: Path) -> int:
    """The pid of the mount daemon of `store` (one mount at a time)."""
    pid = read_pid(next((store / "run").glob("mount-*.json")))
    assert pid is not None
    return pid


def remove_work(work: Path) -> None:
    """Unmount (lazily) any mount a failed run left under `work`, then delete it."""
    for mountpoint in work.rglob("mnt*"):
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
    shutil.rmtree(work, ignore_errors=True)


def mount_metrics(mountpoint: Path) -> dict[str, float]:
    """The mount's own gauges and unlabelled counters (/.casfs/metrics)."""
    values: dict[str, float] = {}
    for line in (mountpoint / ".casfs" / "metrics").read_text().splitlines():
        name, _, value = line.partition(" ")
        if not line.startswith("#") and "{" not in name and value:
            values[name] = float(value)
    return values


def builds_in_turn(builds: list[Path], runs: int) -> Iterator[tuple[int, Path]]:
    """(run, build) for each of `runs` runs and each build in turn; meanwhile a mount
    daemon started runs that build's source (`PYTHONPATH`: run from outside the
    repository, since `python -m` looks in the current directory first)."""
    try:
        for run in range(1, runs + 1):
            for build in builds:
                os.environ["PYTHONPATH"] = str(build.resolve())
                yield run, build
    finally:
        os.environ.pop("PYTHONPATH", None)


@contextmanager
def mounted(store: Path, mountpoint: Path, at: float | None = None,
            durability: str = "close", readonly: bool = False,
            passthrough: bool | None = None) -> Iterator[Path]:
    """`store` mounted at `mountpoint` (cache_timeout 300) for the block; with `at`,
    read-only, as it was at that moment; `durability="batch"` for a bulk load;
    `passthrough` as -o passthrough / nopassthrough (None: the default)."""
    mountpoint.mkdir(exist_ok=True)
    daemon.start(store, mountpoint, MountOptions(cache_timeout=300, at=at,
                                                 readonly=readonly or at is not None,
                                                 durability=durability,
                                                 passthrough=passthrough))
    try:
        yield mountpoint
    finally:
        daemon.unmount(mountpoint)


def write_files(directory: Path, names: list[str], payload: bytes,
                distinct: bool = False) -> int:
    """One writer: each name created, written and closed in turn; how many. Every
    file holds `payload` (so all but the first are dedup hits), or with `distinct`
    its own bytes of the same size (its path at the end of the payload)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = payload
        if distinct:
            tag = str(directory / name).encode()
            data = payload[:max(len(payload) - len(tag), 0)] + tag
        with open(directory / name, "wb") as f:
            f.write(data)
    return len(names)


def write_in_parallel(root: Path, names: list[str], payload: bytes, writers: int,
                      distinct: bool = False) -> int:
    """`names` split over `writers` threads, each in a directory of its own under
    `root` (w0, w1, ...); how many files were written."""
    share = len(names) // writers
    threads = [threading.Thread(target=write_files, args=(
        root / f"w{k}", names[k * share:(k + 1) * share], payload, distinct))
        for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return share * writers


@contextmanager
def serving(command: list[str], mountpoint: Path) -> Iterator[int]:
    """Another FUSE daemon (a peer) that serves in the foreground, mounted at
    `mountpoint` for the block; yields its pid. Its messages go to a log beside the
    mountpoint, quoted when it does not mount."""
    mountpoint.mkdir(exist_ok=True)
    log = mountpoint.parent / f"{mountpoint.name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(mountpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not mount: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield process.pid
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def random_file(path: Path, mib: int) -> Path:
    """A file of `mib` MiB of random bytes (nothing compresses or dedups it)."""
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return path


def native_ingest(source: Path, target: Path) -> float:
    """Seconds of `cp + sha256sum + sync` of `source` to `target` (what an ingest into
    the mount promises, done natively); `target` is removed afterwards."""
    def run() -> None:
        subprocess.run(["cp", str(source), str(target)], check=True)
        subprocess.run(["sha256sum", str(target)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["sync", "-f", str(target)], check=True)
    seconds = timed(run)
    target.unlink()
    return seconds
