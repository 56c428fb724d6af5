"""A first read with nothing cached on this machine: a document read through a new
mount right after the kernel dropped the pages of its blob, against the same bytes
in a native file dropped the same way; read-only mounts (passthrough) and
read-write ones alternating.

    .venv/bin/python contrib/bench/cold_first_read.py [--dir DIR] [--mib 512]
        [--rounds 3]

As root (it drops cached pages). Each line: which mount, the native cold read, the
read through the mount and their ratio (time: lower is better). On a virtual
machine the host may cache the disk underneath: a "cold" read then runs at memory
speed, and the first read of bytes the host has not cached yet runs at disk speed,
whoever reads them (see the README's "FUSE passthrough").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import cat, mounted, random_file, remove_work  # noqa: E402

from casfs.store import Store  # noqa: E402
from casfs.tools.bench import drop_cache  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-cold-first-read-", dir=args.dir))
    try:
        store = work / "store"
        Store.init(store).close()
        native = random_file(work / "native.bin", args.mib)
        with mounted(store, work / "mnt") as mnt:
            (mnt / "b" / "c").mkdir(parents=True)
            subprocess.run(["cp", str(native), str(mnt / "b" / "c" / "f")], check=True)
        with Store.open(store) as opened:
            doc = opened.catalog.resolve_path("/b/c/f")
            assert doc is not None
            blob = opened.blobs.path(doc.sha256)  # type: ignore[attr-defined]
        for round_ in range(args.rounds):
            for readonly in (True, False):
                drop_cache(blob)
                drop_cache(native)
                with mounted(store, work / "mnt", readonly=readonly) as mnt:
                    if round_ % 2:  # which reads first alternates: the second pays less
                        mine, theirs = cat(mnt / "b" / "c" / "f"), cat(native)
                    else:
                        theirs, mine = cat(native), cat(mnt / "b" / "c" / "f")
                name = "read-only (passthrough)" if readonly else "read-write"
                print(f"{name:24} native cold {theirs * 1e3:7.0f} ms   mount "
                      f"{mine * 1e3:7.0f} ms   {mine / theirs:5.2f}x", flush=True)
    finally:
        remove_work(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
