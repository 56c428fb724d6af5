"""What the kernel's FUSE passthrough gives casfs's reads: the experiment behind the
README's section "FUSE passthrough".

    .venv/bin/python contrib/bench/kernel_passthrough.py [--example PATH] [--lib DIR]
        [--dir DIR] [--size-mib 256] [--runs 2]

In one run: the first read of a file through a new mount and a warm re-read, as
ratios to native hot, through casfs read-write (every read asks the daemon), casfs
read-only (passthrough, the default there) and, with --example, libfuse's own C
daemon with and without passthrough. PATH is libfuse's `example/passthrough_hp`
built from libfuse 3.17 or later (`meson setup build -Dexamples=true && ninja -C
build example/passthrough_hp`), DIR its `build/lib` (put on LD_LIBRARY_PATH). As
root (the kernel lets only a privileged daemon open backing files).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mount_workloads import cat, mounted, random_file, remove_work, serving  # noqa: E402

from casfs.store import Store  # noqa: E402


def reads(path: Path, native_hot: float) -> str:
    first = cat(path)
    warm = min(cat(path) for _ in range(3))
    return f"first read {native_hot / first:5.2f}x   warm re-read {native_hot / warm:5.2f}x"


def example(binary: Path, lib: Path | None, source: Path, mountpoint: Path,
            passthrough: bool, native_hot: float) -> str:
    command = [str(binary), "--foreground", *([] if passthrough else ["--nopassthrough"]),
               str(source), str(mountpoint)]
    if lib is not None:
        command = ["env", f"LD_LIBRARY_PATH={lib}", *command]
    with serving(command, mountpoint):
        return reads(mountpoint / "big.bin", native_hot)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", type=Path,
                        help="libfuse's example/passthrough_hp (libfuse 3.17 or later)")
    parser.add_argument("--lib", type=Path, help="the libfuse build's lib directory")
    parser.add_argument("--dir", type=Path, default=Path.cwd())
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="casfs-kernel-passthrough-", dir=args.dir))
    try:
        source, mountpoint = work / "source", work / "mnt-example"
        source.mkdir()
        mountpoint.mkdir()
        big = random_file(source / "big.bin", args.size_mib)
        store = work / "store"
        Store.init(store).close()
        with mounted(store, work / "mnt-casfs") as mnt:
            (mnt / "bench" / "big").mkdir(parents=True)
            shutil.copyfile(big, mnt / "bench" / "big" / "big.bin")
        cat(big)
        native_hot = min(cat(big) for _ in range(3))
        print(f"native hot read of {args.size_mib} MiB: {native_hot * 1e3:.1f} ms")
        for _ in range(args.runs):
            for passthrough in (True, False) if args.example else ():
                name = "libfuse example, " + ("passthrough" if passthrough else "no passthrough")
                result = example(args.example, args.lib, source, mountpoint, passthrough,
                                 native_hot)
                print(f"{name:36} {result}", flush=True)
            for name, readonly in (("casfs read-write", False), ("casfs read-only, passthrough",
                                                                  True)):
                # a new mount each time; the blob is hot underneath
                with mounted(store, work / "mnt-casfs", readonly=readonly) as mnt:
                    print(f"{name:36} {reads(mnt / 'bench' / 'big' / 'big.bin', native_hot)}",
                          flush=True)
    finally:
        remove_work(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
