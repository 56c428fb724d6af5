"""`mount.casfs` / `mount.fuse.casfs`: what mount(8) runs for an fstab line of type fuse.casfs.

mount(8) calls `mount.fuse.casfs SPEC DIR [-sfnv] [-o OPTIONS]`, where SPEC is
the store directory. See contrib/fstab.example.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from casfs.config import load_config
from casfs.errors import CasfsError
from casfs.mount import daemon
from casfs.mount.options import MountOptions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mount.casfs", description="Mount a casfs store (the mount(8) helper).")
    parser.add_argument("store", type=Path, help="the store directory (fstab's first field)")
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("-o", dest="options", action="append", default=[])
    for flag in ("-s", "-n", "-v"):  # sloppy, no-mtab, verbose: nothing to do for casfs
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-f", dest="fake", action="store_true",
                        help="fake: check the options, do not mount")
    parser.add_argument("-t", dest="fstype", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        options = MountOptions.parse(args.options, load_config().mount)
        if not args.fake:
            daemon.start(args.store, args.mountpoint, options)
    except CasfsError as e:
        print(f"mount.casfs: {e}", file=sys.stderr)
        return 32  # mount(8)'s "mount failure"
    return 0
