"""`casfs bench`: each workload through a mount and natively, in one run, as ratios.

Everything happens in a temporary directory under --dir (the disk being
measured): a store, its mount, a native directory beside it, and two synthetic
catalogs for the scale workloads. Mounts are unmounted and the directory removed
at the end, whatever happens. Times are best of a few runs where that is cheap;
"first" workloads run once, after caches were dropped for that file or tree.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from casfs import synthetic
from casfs.blobs.local import LocalBlobStore
from casfs.mount import daemon
from casfs.mount.options import MountOptions
from casfs.processes import mount_pid_file, read_pid
from casfs.store import Store, StoreLayout

CHUNK = 1 << 20
WRITERS = 8  # parallel writers of the small files, as a pipeline's download workers


@dataclass
class Row:
    workload: str
    native: float | None  # seconds
    mount: float  # seconds
    unit: str = ""  # what a rate counts, e.g. "files"
    count: int = 0  # how many of `unit`
    goal: str = ""

    @property
    def ratio(self) -> float | None:
        """Mount time over native time: 1.0 is as fast as native, 2.0 twice as slow."""
        return self.mount / self.native if self.native else None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workload": self.workload, "native_s": self.native,
                               "mount_s": self.mount, "time_ratio": self.ratio,
                               "goal": self.goal}
        if self.count:
            out[f"mount_{self.unit}_per_s"] = self.count / self.mount if self.mount else None
        return out


Progress = Callable[[str], None]


def timed(action: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def _stat_all(paths: list[Path]) -> None:
    for path in paths:
        os.stat(path)


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def drop_cache(path: Path) -> None:
    """Ask the kernel to forget the cached pages of one file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_dentries() -> bool:
    """Forget cached names and inodes everywhere (needs root); False when not allowed."""
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        return True
    except OSError:
        return False


def make_small_files(directory: Path, count: int) -> Path:
    """`count` files of 2-6 KiB in a new `directory`, the same bytes every time."""
    directory.mkdir()
    rng = random.Random(1)
    for i in range(count):
        (directory / f"f{i:06d}.txt").write_bytes(rng.randbytes(rng.randint(2048, 6144)))
    return directory


def deal_out(source: Path, into: Path, writers: int) -> list[Path]:
    """`source`'s files dealt out to `writers` new directories in `into` (hard links:
    the same disk, no copy), one for each writer of `copy_at_once`."""
    shares = [into / f"small-share-{k}" for k in range(writers)]
    for share in shares:
        share.mkdir()
    for i, name in enumerate(sorted(os.listdir(source))):
        os.link(source / name, shares[i % writers] / name)
    return shares


def copy_at_once(shares: list[Path], target: Path) -> None:
    """One `cp -r` per share, all at once, each into a directory of its own under
    `target`: download workers of a pipeline, each close durable on its own."""
    target.mkdir(parents=True)
    copies = [subprocess.Popen(["cp", "-r", f"{share}/.", str(target / share.name)])
              for share in shares]
    failed = [c.args for c in copies if c.wait() != 0]
    if failed:
        raise subprocess.CalledProcessError(1, failed[0])


def make_durable(directory: Path) -> None:
    """One more file, fsynced: on a bulk-loading mount, a durability round for all
    the files closed before it."""
    with open(directory / "durable-now", "wb") as f:
        f.write(b"x")
        f.flush()
        os.fsync(f.fileno())


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, work: Path, *, size: int, files: int, records: int,
                 progress: Progress) -> None:
        self.work = work
        self.size = size
        self.files = files
        self.records = records
        self.say = progress
        self.rows: list[Row] = []
        self.memory: dict[str, float] = {}

    @contextmanager
    def mounted(self, store: Path, name: str, noxattr: bool = False,
                durability: str = "close", readonly: bool = False) -> Iterator[Path]:
        mountpoint = self.work / f"mnt-{name}"
        mountpoint.mkdir(exist_ok=True)
        daemon.start(store, mountpoint, MountOptions(cache_timeout=300, noxattr=noxattr,
                                                     durability=durability,
                                                     readonly=readonly))
        try:
            yield mountpoint
        finally:
            pid = read_pid(mount_pid_file(StoreLayout(store.absolute()), mountpoint))
            if pid is not None:
                self.memory[name] = max(self.memory.get(name, 0.0), peak_rss_mib(pid))
            daemon.unmount(mountpoint)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        ratio = f"{row.ratio:.2f}x" if row.ratio else "-"
        self.say(f"{row.workload}: mount {row.mount:.3f}s, native "
                 f"{row.native if row.native is None else round(row.native, 3)}s ({ratio})")

    def run_all(self) -> None:
        store = self.work / "store"
        Store.init(store).close()
        native = self.work / "native"
        native.mkdir()
        self.big_file(store, native)
        self.small_files(store, native)
        self.scale()

    def big_file(self, store: Path, native: Path) -> None:
        src = self.work / "big.bin"
        self.say(f"writing a {self.size >> 20} MiB source file")
        with src.open("wb") as f:
            for offset in range(0, self.size, CHUNK):
                f.write(os.urandom(min(CHUNK, self.size - offset)))
        target = native / "big.bin"

        def native_ingest() -> None:
            run(["cp", str(src), str(target)])
            run(["sha256sum", str(target)])
            run(["sync", "-f", str(target)])

        with self.mounted(store, "main") as mnt:
            (mnt / "bench" / "big").mkdir(parents=True)
            copy = mnt / "bench" / "big" / "big.bin"
            mount_time = timed(lambda: run(["cp", str(src), str(copy)]))
            self.add(Row("ingest: copy one large file in", timed(native_ingest), mount_time,
                         goal="<= 1.43x (speed >= 0.7x of cp + sha256sum + sync)"))
            with Store.open(store, readonly=True) as opened:
                doc = opened.catalog.resolve_path("/bench/big/big.bin")
                assert doc is not None
                assert isinstance(opened.blobs, LocalBlobStore)  # bench makes its own store
                blob = opened.blobs.path(doc.sha256)
        cat = ["cat"]
        run([*cat, str(blob)])  # the blob's own pages are cached underneath
        native_hot = timed(lambda: run([*cat, str(target)]), repeat=3)
        # An analyst's read-only mount, where the kernel reads the blob itself
        # (passthrough), then a read-write one, where every read asks the daemon.
        for kind, readonly, goals in (("read-only", True, True), ("read-write", False, False)):
            with self.mounted(store, "main", readonly=readonly) as mnt:  # nothing cached
                read = [*cat, str(mnt / "bench" / "big" / "big.bin")]
                self.add(Row(f"first read through a new {kind} mount vs native hot",
                             native_hot, timed(functools.partial(run, read)),
                             goal="<= 3.3x (speed >= 0.3x)" if goals else ""))
                self.add(Row(f"warm re-read, {kind} mount", native_hot,
                             timed(functools.partial(run, read), repeat=3),
                             goal="<= 1.11x (speed >= 0.9x)" if goals else ""))
        drop_cache(blob)
        drop_cache(target)
        with self.mounted(store, "main", readonly=True) as mnt:
            copy = mnt / "bench" / "big" / "big.bin"
            native_cold = timed(lambda: run([*cat, str(target)]))
            self.add(Row("first read, nothing cached anywhere", native_cold,
                         timed(lambda: run([*cat, str(copy)]))))

    def small_files(self, store: Path, native: Path) -> None:
        src = make_small_files(self.work / "small", self.files)
        with self.mounted(store, "main") as mnt:
            target = mnt / "bench" / "small"
            target.mkdir(parents=True)
            mount_time = timed(lambda: run(["cp", "-r", f"{src}/.", str(target)]))
            native_time = timed(lambda: run(["cp", "-r", f"{src}/.", str(native / "small")]))
            self.add(Row(f"small files: cp of {self.files:,} files into one artifact",
                         native_time, mount_time, "files", self.files,
                         goal=">= 700 files/s"))
            shares = deal_out(src, self.work, WRITERS)
            native_parallel = timed(lambda: copy_at_once(shares, native / "small-parallel"))
            self.add(Row(f"small files: {WRITERS} cp at once, {self.files:,} files in all, "
                         "each into its own artifact", native_parallel,
                         timed(lambda: copy_at_once(shares, mnt / "parallel")),
                         "files", sum(len(os.listdir(s)) for s in shares),
                         goal=">= 1,500 files/s"))
        with self.mounted(store, "main", durability="batch") as mnt:
            target = mnt / "bench" / "small-batch"
            target.mkdir(parents=True)

            def bulk_load() -> None:  # the files, then one durability round for them all
                run(["cp", "-r", f"{src}/.", str(target)])
                make_durable(target)
            self.add(Row(f"small files: cp of {self.files:,} files, bulk load "
                         "(-o durability=batch, durable at the end)", native_time,
                         timed(bulk_load), "files", self.files, goal=">= 1,500 files/s"))
        names = sorted(os.listdir(src))
        with self.mounted(store, "main") as mnt:
            mine = [mnt / "bench" / "small" / n for n in names]
            theirs = [native / "small" / n for n in names]
            dropped = drop_dentries()
            native_fresh = timed(lambda: [os.stat(p) for p in theirs])
            mount_fresh = timed(lambda: [os.stat(p) for p in mine])
            note = "" if dropped else " (native not dropped: not root)"
            self.add(Row(f"stat of every small file, fresh{note}", native_fresh, mount_fresh))
            self.add(Row("stat of every small file, repeated",
                         timed(lambda: [os.stat(p) for p in theirs], repeat=3),
                         timed(lambda: [os.stat(p) for p in mine], repeat=3),
                         goal="<= 1.2x"))
        with self.mounted(store, "main") as mnt:
            drop_dentries()
            ls_native = ["ls", "-l", str(native / "small")]
            ls_mount = ["ls", "-l", str(mnt / "bench" / "small")]
            native_first = timed(lambda: run(ls_native))
            mount_first = timed(lambda: run(ls_mount))
            self.add(Row(f"ls -l of {self.files:,} entries, first", native_first,
                         mount_first, goal="<= 3x"))
            self.add(Row(f"ls -l of {self.files:,} entries, repeated",
                         timed(lambda: run(ls_native), repeat=3),
                         timed(lambda: run(ls_mount), repeat=3), goal="<= 2x"))
            self.add(Row("find over the tree", timed(lambda: run(["find", str(native)]), 3),
                         timed(lambda: run(["find", str(mnt)]), repeat=3)))
        with self.mounted(store, "main", noxattr=True) as mnt:
            drop_dentries()
            ls_mount = ["ls", "-l", str(mnt / "bench" / "small")]
            self.add(Row(f"ls -l of {self.files:,} entries, first, -o noxattr",
                         timed(lambda: run(ls_native)), timed(lambda: run(ls_mount))))
            self.add(Row(f"ls -l of {self.files:,} entries, repeated, -o noxattr",
                         timed(lambda: run(ls_native), repeat=3),
                         timed(lambda: run(ls_mount), repeat=3)))

    def scale(self) -> None:
        """Lookup and readdir on a small and a large catalog: the cost must not grow."""
        large_artifacts = max(self.records // 10, 1)
        per_size: dict[str, dict[str, float]] = {}
        for label, artifacts in (("small", max(large_artifacts // 100, 10)),
                                 ("large", large_artifacts)):
            path = self.work / f"scale-{label}"
            with Store.init(path) as store:
                self.say(f"generating {artifacts * 10:,} records")
                synthetic.fill(store, resolver="bulk", artifacts=artifacts, per_artifact=10)
            picks = random.Random(2).sample(range(artifacts), min(artifacts, 1000))
            with self.mounted(path, f"scale-{label}") as mnt:
                paths = [mnt / "bulk" / f"W{a:08d}" / "doc005.pdf" for a in picks]
                lookup = timed(partial(_stat_all, paths)) / len(paths)
                listing = timed(partial(os.listdir, mnt / "bulk")) / artifacts
                per_size[label] = {"records": artifacts * 10, "lookup": lookup,
                                   "readdir": listing, "ls_s": listing * artifacts}
        small, large = per_size["small"], per_size["large"]
        self.add(Row(f"lookup per path: {large['records']:,.0f} vs {small['records']:,.0f} "
                     "records (native column: the small catalog)",
                     small["lookup"], large["lookup"], goal="<= 1.5x"))
        self.add(Row(f"readdir per entry: ls of {large['records'] / 10:,.0f} vs "
                     f"{small['records'] / 10:,.0f} artifacts", small["readdir"],
                     large["readdir"], goal="<= 1.5x"))
        self.rows[-1].workload += f" (ls of the large one: {large['ls_s']:.2f}s)"


def bench(directory: Path, *, size: int, files: int, records: int,
          progress: Progress) -> tuple[list[Row], dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="casfs-bench-", dir=directory))
    try:
        runner = Bench(work, size=size, files=files, records=records, progress=progress)
        runner.run_all()
        return runner.rows, runner.memory
    finally:
        for mountpoint in work.glob("mnt-*"):
            if os.path.ismount(mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        shutil.rmtree(work, ignore_errors=True)
