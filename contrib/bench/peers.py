"""casfs beside its peers, in one run: the same workloads through casfs (as it
mounts read-write by default, with -o passthrough, as read-only mounts read, and
in a bulk load, -o durability=batch),
through pyfuse3's passthrough example and through `rclone mount` (VFS cache off), each as a
ratio to native ext4 on the same disk.

    .venv/bin/python contrib/bench/peers.py --passthrough FILE [--dir DIR]
        [--size-mib 256] [--files 5000] [--json]

FILE is `examples/passthroughfs.py` from pyfuse3's source (its repository or its
source distribution, of the pyfuse3 installed here); rclone is Debian's
(`apt-get install rclone`). A peer that is missing is left out, and the output says
why. As root: it drops the kernel's caches. Everything lives under --dir and is
removed at the end; every mount is unmounted and every daemon it started ended.

The peers promise less than casfs: neither hashes, and neither makes a close
durable (casfs registers and fsyncs every closed file). Ratios: higher is better,
except those marked "x native" (times: lower is better).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import (  # noqa: E402
    daemon_pid,
    drop_caches,
    mounted,
    native_ingest,
    random_file,
    remove_work,
    serving,
    timed,
    write_in_parallel,
)

from casfs.store import Store  # noqa: E402
from casfs.tools.bench import peak_rss_mib  # noqa: E402

Mount = Callable[[], AbstractContextManager[tuple[Path, int]]]


@contextmanager
def peer(command: list[str], mountpoint: Path) -> Iterator[tuple[Path, int]]:
    with serving(command, mountpoint) as pid:
        yield mountpoint, pid


def casfs_mount(work: Path, passthrough: bool | None = None,
                durability: str = "close") -> Mount:
    """casfs read-write; with `passthrough`, the kernel reads blobs itself as on a
    read-only mount (-o passthrough); with durability "batch", a bulk load (closes
    registered, made durable by a round every few seconds: like the peers, whose
    closes are not durable either)."""
    variant = "passthrough-" if passthrough is not None else ""
    store = work / f"casfs-{variant}{durability}-store"
    Store.init(store).close()

    @contextmanager
    def mount() -> Iterator[tuple[Path, int]]:
        with mounted(store, work / "mnt-casfs", passthrough=passthrough,
                     durability=durability) as mnt:
            yield mnt, daemon_pid(store)
    return mount


def passthrough_mount(work: Path, example: Path) -> Mount:
    source = work / "passthrough-source"
    source.mkdir()
    return lambda: peer([sys.executable, str(example), str(source), str(work / "mnt-pt")],
                        work / "mnt-pt")


def rclone_mount(work: Path) -> Mount:
    source = work / "rclone-source"
    source.mkdir()
    return lambda: peer(["rclone", "mount", str(source), str(work / "mnt-rclone"),
                         "--vfs-cache-mode", "off"], work / "mnt-rclone")


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def best_of(action: Callable[[], object], times: int = 3) -> float:
    return min(timed(action) for _ in range(times))


def native_baselines(work: Path, big: Path, small: list[str], payload: bytes
                     ) -> dict[str, float]:
    native = work / "native"
    native.mkdir()
    out = {"ingest": native_ingest(big, native / "big.bin"),
           "hot read": best_of(lambda: run(["cat", str(big)]))}
    write_in_parallel(native / "small", small, payload, 1)
    directory = native / "small" / "w0"
    drop_caches(2)
    out["ls -l first"] = timed(lambda: run(["ls", "-l", str(directory)]))
    out["ls -l repeated"] = best_of(lambda: run(["ls", "-l", str(directory)]))
    paths = [directory / name for name in small]
    for path in paths:
        os.stat(path)
    out["stat repeated"] = best_of(lambda: [os.stat(p) for p in paths])
    return out


def measure(mount: Mount, big: Path, small: list[str], payload: bytes,
            native: dict[str, float]) -> dict[str, float]:
    """One file system through the workloads; ratios to `native`."""
    out: dict[str, float] = {}
    peak = 0.0
    with mount() as (mnt, pid):
        root = mnt / "bench" / "big"
        root.mkdir(parents=True)
        out["ingest vs cp + sha256sum + sync"] = native["ingest"] / timed(
            lambda: run(["cp", str(big), str(root / "big.bin")]))
        peak = max(peak, peak_rss_mib(pid))
    with mount() as (mnt, pid):  # a new mount: nothing of the file in its page cache
        copy = mnt / "bench" / "big" / "big.bin"
        out["first read through a new mount vs native hot"] = native["hot read"] / timed(
            lambda: run(["cat", str(copy)]))
        out["warm re-read vs native hot"] = native["hot read"] / best_of(
            lambda: run(["cat", str(copy)]))
        for writers in (1, 8):
            root = mnt / f"small-{writers}"  # a resolver; each writer an artifact
            start = time.perf_counter()
            done = write_in_parallel(root, small, payload, writers)
            out[f"small files/s, {writers} writer(s)"] = done / (time.perf_counter() - start)
        peak = max(peak, peak_rss_mib(pid))
    with mount() as (mnt, pid):
        directory = mnt / "small-1" / "w0"
        drop_caches(2)
        out["ls -l, first (x native)"] = timed(
            lambda: run(["ls", "-l", str(directory)])) / native["ls -l first"]
        out["ls -l, repeated (x native)"] = best_of(
            lambda: run(["ls", "-l", str(directory)])) / native["ls -l repeated"]
        paths = [directory / name for name in small]
        for path in paths:  # once: the timed ones are repeats
            os.stat(path)
        out["repeated stat (x native)"] = best_of(
            lambda: [os.stat(p) for p in paths]) / native["stat repeated"]
        out["daemon peak memory, MiB"] = max(peak, peak_rss_mib(pid))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--passthrough", type=Path, metavar="FILE",
                        help="pyfuse3's examples/passthroughfs.py")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-peers-", dir=args.dir))
    results: dict[str, dict[str, float]] = {}
    left_out: dict[str, str] = {}
    try:
        big = random_file(work / "big.bin", args.size_mib)
        payload = os.urandom(2048)
        small = [f"f{i:06d}.bin" for i in range(args.files)]
        native = native_baselines(work, big, small, payload)
        peers: dict[str, Mount] = {"casfs": casfs_mount(work),
                                   "casfs -o passthrough": casfs_mount(work, True),
                                   "casfs -o durability=batch":
                                       casfs_mount(work, durability="batch")}
        if args.passthrough is None or not args.passthrough.is_file():
            left_out["pyfuse3 passthrough"] = "no --passthrough FILE given (or not a file)"
        else:
            peers["pyfuse3 passthrough"] = passthrough_mount(work, args.passthrough)
        if shutil.which("rclone") is None:
            left_out["rclone mount"] = "rclone is not installed (apt-get install rclone)"
        else:
            peers["rclone mount (vfs off)"] = rclone_mount(work)
        for name, mount in peers.items():
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = measure(mount, big, small, payload, native)
    finally:
        remove_work(work)
    if args.json:
        print(json.dumps({"results": results, "left out": left_out}, indent=2))
        return 0
    names = list(results)
    print(f"{'workload':48}" + "".join(f"{n:>24}" for n in names))
    for workload in results[names[0]]:
        print(f"{workload:48}" + "".join(f"{results[n][workload]:24.2f}" for n in names))
    for name, why in left_out.items():
        print(f"left out: {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
