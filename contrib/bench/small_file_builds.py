"""Small files copied in through builds of casfs taking turns: the experiment behind
the README's comparisons of small-file changes ("A bulk load's rounds gather").

    git worktree add /tmp/before HEAD~1
    .venv/bin/python contrib/bench/small_file_builds.py [--dir DIR] [--files 5000]
        [--runs 5] [--durability batch] [--writers 1] SOURCE_DIR [SOURCE_DIR ...]

Makes --files files of 2-6 KiB (as `casfs bench` makes them), then for each run
mounts each build in turn on a store of its own (its daemon runs with
`PYTHONPATH=SOURCE_DIR`, so run this from outside the repository: `python -m` looks
in the current directory first) and times one `cp -r` of them into an artifact
directory, followed by an fsync of one more file there (in a bulk load, a
durability round for them all, as `casfs bench` times it). With --writers N, the
files are dealt out to N `cp -r` at once, each into an artifact of its own, as
`casfs bench` copies them for its parallel writers. Each line: files/s, the
daemon's CPU per file, the registration rounds the files took, what one took in its
thread on average and how much of the copy's time they ran (the mount's
/.casfs/metrics; a build without the round time says 0). Nothing is deleted until
the end: on ext4 without a journal, deleting many files slows the next minute's
creates (README, "The disk's share").
The machine moves between runs: compare builds within a run, and over several.
Leaves nothing behind.
"""

from __future__ import annotations

import argparse
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
    builds_in_turn,
    cpu_seconds,
    daemon_pid,
    mount_metrics,
    mounted,
    remove_work,
)

from casfs.store import Store  # noqa: E402
from casfs.tools.bench import copy_at_once, deal_out, make_small_files  # noqa: E402


def copy_in(shares: list[Path], store: Path, mountpoint: Path, durability: str, files: int
            ) -> tuple[float, str]:
    Store.init(store).close()
    with mounted(store, mountpoint, durability=durability) as mnt:
        target = mnt / "bench" / "small"
        target.mkdir(parents=True)
        pid = daemon_pid(store)
        cpu, start = cpu_seconds(pid), time.perf_counter()
        if len(shares) == 1:
            subprocess.run(["cp", "-r", f"{shares[0]}/.", str(target)], check=True)
        else:
            copy_at_once(shares, mnt / "parallel")
        with open(target / "zz-last", "wb") as f:
            f.write(b"x")
            os.fsync(f.fileno())
        seconds = time.perf_counter() - start
        cpu = cpu_seconds(pid) - cpu
        metrics = mount_metrics(mnt)
        rounds = int(metrics.get("casfs_mount_registration_commits", 0))
        busy = metrics.get("casfs_mount_registration_seconds", 0.0)
    rate = files / seconds
    return rate, (f"{rate:6.0f} files/s   daemon CPU {1000 * cpu / files:5.3f} ms a file   "
                  f"{rounds} rounds of {1000 * busy / max(rounds, 1):4.2f} ms "
                  f"(busy {100 * busy / seconds:3.0f}%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", type=Path, metavar="SOURCE_DIR")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--durability", choices=("batch", "close"), default="batch")
    parser.add_argument("--writers", type=int, default=1,
                        help="cp processes at once, each with its share of the files")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-small-builds-", dir=args.dir))
    rates: dict[Path, list[float]] = {build: [] for build in args.builds}
    try:
        source = make_small_files(work / "small", args.files)
        shares = [source] if args.writers == 1 else deal_out(source, work, args.writers)
        for turn, (run, build) in enumerate(builds_in_turn(args.builds, args.runs)):
            rate, line = copy_in(shares, work / f"store-{turn}", work / "mnt",
                                 args.durability, args.files)
            rates[build].append(rate)
            print(f"run {run}  {build!s:30}  {line}", flush=True)
        for build, seen in rates.items():
            print(f"median  {build!s:30}  {statistics.median(seen):6.0f} files/s")
    finally:
        remove_work(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
