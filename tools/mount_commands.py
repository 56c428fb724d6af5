"""Subcommands that mount and unmount a store."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casfs.errors import CasfsError

if TYPE_CHECKING:
    from .context import Context

OPTIONS_HELP = ("mount options, comma separated: ro (read-only: every write gets EROFS), "
                "allow_other (let other users in), cache_timeout=SECONDS (how long the kernel "
                "caches names and attributes: the bound on how soon outside changes show), "
                "metrics_port=PORT (Prometheus metrics on 127.0.0.1:PORT), readahead=SIZE "
                "(how far the kernel reads ahead, 1M by default; 0 keeps its own 128K), "
                "passthrough / nopassthrough (the kernel reads blobs itself, without "
                "the daemon: on by default for ro mounts; on a read-write mount a file "
                "read that way refuses writes with ETXTBSY until its readers close; "
                "Linux 6.9+, as root), "
                "noxattr (no "
                "extended attributes at all, user.casfs.* included), "
                "durability=batch (a bulk load: a close returns at once and its file "
                "is registered right after, a failure reported by the next fsync; "
                "closes are made durable in rounds, every durability_interval=SECONDS "
                "(5), on fsync and at unmount; a crash loses at most the closes since "
                "the last round; embedded catalog and local blobs only), "
                "catalog_timeout=SECONDS (on a PostgreSQL catalog: how long a request "
                "waits for the server before it fails with EIO, 30 by default; 0 waits "
                "as long as it takes), debug")


def register(commands: Any) -> None:
    p = commands.add_parser(
        "mount", help="mount the store at MOUNTPOINT",
        description="Mount the store as /<resolver>/<artifact_id>/<basename>. Returns once "
                    "the mount is ready; the daemon logs to <store>/log/mount.log.")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS",
                   help=OPTIONS_HELP)
    p.add_argument("--foreground", "-f", action="store_true",
                   help="serve in this process until unmounted (logs to stderr)")
    p.add_argument("--at", metavar="WHEN",
                   help="time travel: mount the tree as it was at WHEN, read-only (an ISO "
                        "8601 time such as 2026-11-20T14:00:00Z or with an offset, a date "
                        "(00:00 UTC), a time ago such as 3d or 2h30m, or a snapshot's name)")
    p.add_argument("--partial", action="store_true",
                   help="with --at: mount a moment even when some of its files have lost "
                        "their bytes to gc (those files give EIO, each logged once)")
    p.set_defaults(func=cmd_mount)

    p = commands.add_parser(
        "umount", help="unmount and wait for pending writes to be finalized",
        description="Unmount MOUNTPOINT and wait until its daemon has finished.")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the daemon (default 60)")
    p.set_defaults(func=cmd_umount)


def cmd_mount(args: argparse.Namespace, ctx: Context) -> int:
    from casfs.moments import format_moment
    from casfs.mount import daemon  # not at import: every command would load FUSE
    from casfs.mount.options import MountOptions
    at = []
    if args.partial and not args.at:
        raise CasfsError("--partial goes with --at WHEN")
    if args.at:
        from .snapshot_commands import resolve_moment
        with ctx.open_store(readonly=True) as store:
            moment = resolve_moment(args.at, store.catalog)
            lost, since = store.catalog.lost_at(moment)
        if lost and not args.partial:
            raise CasfsError(
                f"the store as it was at {format_moment(moment)} is not whole: {lost:,} "
                f"document(s) live then have lost their bytes (gc past the retention "
                f"window, or verify); every moment from {format_moment(since or moment)} "
                "on is whole. Add --partial to mount it anyway (those files give EIO), "
                "and keep moments you will need with casfs snapshot create")
        at = [f"at=@{moment!r}"]
    options = MountOptions.parse(args.options + at, ctx.config.mount)
    mountpoint = args.mountpoint.absolute()
    if args.foreground:
        daemon.prepare_mountpoint(mountpoint)
        code: int = daemon.run(ctx.store_path, mountpoint, options)
        return code
    pid = daemon.start(ctx.store_path, mountpoint, options)
    shown = "" if options.at is None else f", as it was at {format_moment(options.at)}"
    print(f"mounted {ctx.store_path.absolute()} at {mountpoint} (daemon {pid}{shown})")
    return 0


def cmd_umount(args: argparse.Namespace, ctx: Context) -> int:
    from casfs.mount import daemon  # not at import: every command would load FUSE
    daemon.unmount(args.mountpoint, timeout=args.timeout)
    return 0
