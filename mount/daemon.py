"""Running a mount: the daemon process, readiness, and unmounting.

`start` (what `casfs mount` calls) spawns `python -m casfs.mount` in its own
session and returns once the daemon reports that the kernel mount is up, or with
the daemon's own error. `run` is the daemon: it opens the store, mounts, serves
until unmounted or sent SIGTERM/SIGINT, and always closes the store. `unmount`
asks the kernel to unmount and waits for the daemon to finish, so every flush in
flight has been finalized when it returns.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyfuse3
import trio

from casfs import bulk_load, fsck, metrics
from casfs.bulk_load import BulkLoad
from casfs.catalog import Catalog
from casfs.config import MountConfig
from casfs.errors import CasfsError
from casfs.link_first import ADVANCE_S, LinkFirst
from casfs.moments import format_moment
from casfs.processes import mount_pid_file, pid_alive, read_pid
from casfs.store import Store, StoreLayout

from . import control, metrics_http, readahead
from .catalog_writer import CatalogWriter
from .change_listener import ChangeListener
from .closes_behind import GATHER_S, ClosesBehind
from .durability_rounds import DurabilityRounds
from .operations import CasfsOperations
from .options import MountOptions
from .passthrough import Passthrough
from .snapshot_views import SnapshotViews

log = logging.getLogger("casfs.mount")

FS_TYPE = "fuse.casfs"
READY = b"ready\n"
# -- finding running mounts -------------------------------------------------------
def _unescape(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounted_store(mountpoint: Path) -> Path | None:
    """The store behind a casfs mount at `mountpoint`, from /proc/mounts."""
    target = str(mountpoint.absolute())
    with open("/proc/mounts") as f:
        for line in f:
            source, where, fstype, *_ = line.split()
            if _unescape(where) == target and fstype == FS_TYPE:
                return Path(_unescape(source))
    return None


def _is_stale(mountpoint: Path) -> bool:
    """A mount whose daemon died. statvfs always reaches the daemon; stat may not."""
    try:
        os.statvfs(mountpoint)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


def _fusermount(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("fusermount3") or shutil.which("fusermount")
    if exe is None:
        raise CasfsError("fusermount3 not found: install the fuse3 package")
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False)


# -- starting ---------------------------------------------------------------------
def start(store_root: Path, mountpoint: Path, options: MountOptions,
          timeout: float = 30.0) -> int:
    """Start a mount daemon and wait until the mount is ready. Returns its pid."""
    mountpoint = mountpoint.absolute()
    prepare_mountpoint(mountpoint)
    layout = StoreLayout(store_root.absolute())
    if not layout.catalog.is_file() and not layout.store_file.is_file():
        raise CasfsError(f"no casfs store at {store_root} (run 'casfs init' to create one)")
    read_end, write_end = os.pipe()
    log_path = layout.log / "mount.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "casfs.mount", "--store", str(layout.root),
             "--ready-fd", str(write_end), *options.to_strings(), str(mountpoint)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file,
            pass_fds=(write_end,), start_new_session=True,
            # Not the caller's directory: `python -m` would import a casfs/ found
            # there before the installed one, and the daemon would keep it busy.
            cwd="/")
    os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        line = ready.readline()  # EOF when the daemon fails before mounting
    if line == READY:
        if options.readahead_kib:
            readahead.set_once_up(mountpoint, options.readahead_kib)
        return proc.pid
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    reason = line.decode(errors="replace").strip() or f"see {log_path}"
    raise CasfsError(f"mount failed: {reason}")


def prepare_mountpoint(mountpoint: Path) -> None:
    """Refuse a bad mountpoint; recover one left behind by a mount that died."""
    if _is_stale(mountpoint):
        log.warning("%s: recovering a mount whose daemon died", mountpoint)
        _fusermount("-u", "-z", str(mountpoint))
    if not mountpoint.is_dir():
        raise CasfsError(f"mountpoint {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise CasfsError(f"{mountpoint} is already a mountpoint")


# -- the daemon -------------------------------------------------------------------
def run(store_root: Path, mountpoint: Path, options: MountOptions,
        ready_fd: int | None = None) -> int:
    """Serve a mount until it is unmounted. Returns an exit code."""
    logging.basicConfig(
        level=logging.DEBUG if options.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    try:
        store = Store.open(store_root, readonly=options.readonly,
                           answer_within=options.catalog_timeout)
        if options.at is not None:
            store.show_at(options.at)
    except CasfsError as e:
        _report(ready_fd, str(e))
        return 2
    if not options.readonly:
        _clean_staging(store)
        bulk_load.recover_all(store)
    writer = None if options.readonly else CatalogWriter(store)
    ops = CasfsOperations(store, writer, readonly=options.readonly,
                          cache_timeout=options.cache_timeout, xattrs=not options.noxattr,
                          snapshots=options.at is None)
    if writer is not None and options.durability == "batch":
        try:
            ops.durability = _bulk_load(store, writer, ops, options.durability_interval)
        except CasfsError as e:
            writer.close()
            store.close()
            _report(ready_fd, str(e))
            return 2
    elif writer is not None:
        writer.link_first = _link_first(store)
    passthrough = ops.files.passthrough = Passthrough(
        wanted=options.use_passthrough, asked=options.passthrough is True)
    views = None if options.at is not None else SnapshotViews(
        ops, lambda snapshot: _view(store_root, snapshot.at, options, passthrough))
    fuse_options = {f"fsname={store.layout.root}", "subtype=casfs"}
    if options.readonly:
        fuse_options.add("ro")
    if options.allow_other:
        # Others may read, not write: the kernel checks their access against the
        # tree's modes. Without allow_other only the mounting user (to whom every
        # mode says yes) gets in, and the kernel's check would only cost a GETATTR
        # of a directory after each file created in it (README, "Small files").
        fuse_options |= {"allow_other", "default_permissions"}
    if options.debug:
        fuse_options.add("debug")
    passthrough.ask_kernel()
    try:
        pyfuse3.init(views or ops, str(mountpoint), fuse_options)
    except RuntimeError as e:
        if writer is not None:
            if writer.link_first is not None:
                writer.link_first.finish()  # nothing was linked
            writer.close()
        store.close()
        _report(ready_fd, f"cannot mount {mountpoint}: {e}")
        return 2
    pidfile = mount_pid_file(store.layout, mountpoint)
    pidfile.write_text(json.dumps({"pid": os.getpid(), "mountpoint": str(mountpoint)}))
    shown = "" if options.at is None else f", as it was at {format_moment(options.at)}"
    log.info("mounted %s at %s (%s)%s", store.layout.root, mountpoint,
             ",".join(options.to_strings()[1:]), shown)
    _report(ready_fd, None)
    otel_catalog = _instrument(store)
    listener = ChangeListener(store, lambda: writer.senders if writer else set(),
                              ops.forget_cached)
    if not store.catalog.local and not options.nonotify and options.at is None:
        listener.start()  # (a past moment does not change)
    clean = False
    try:
        trio.run(_serve, ops, options.metrics_port, writer.link_first if writer else None)
        clean = True
    finally:
        listener.stop()
        pyfuse3.close(unmount=True)
        if ops.durability is not None:
            try:
                ops.durability.finish()  # the last round: nothing left to recover
            except Exception:  # the rest must still close; the marker stays behind
                log.exception("the last durability round failed; the next mount checks "
                              "what this bulk load placed since the round before")
        if writer is not None and writer.link_first is not None:
            try:
                writer.link_first.finish()
            except Exception:  # the marker stays behind
                log.exception("could not sync at unmount; after a crash of this machine "
                              "the next mount checks what this one linked")
        pidfile.unlink(missing_ok=True)
        if otel_catalog is not None:
            otel_catalog.close()
        ops.files.staging.close()
        if writer is not None:
            writer.close()
        if views is not None:
            views.close()
        ops.query.close()
        store.close()
        log.info("unmounted %s%s", mountpoint, "" if clean else " after an error")
    return 0


def _view(store_root: Path, moment: float, options: MountOptions,
          passthrough: Passthrough) -> CasfsOperations:
    """The read-only operations of the tree at `moment` (a snapshot's, in a live mount)."""
    store = Store.open(store_root, readonly=True, answer_within=options.catalog_timeout)
    store.show_at(moment)
    view = CasfsOperations(store, None, readonly=True, cache_timeout=options.cache_timeout,
                           xattrs=not options.noxattr, control_shown=False)
    view.files.passthrough = passthrough
    return view


def _bulk_load(store: Store, writer: CatalogWriter, ops: CasfsOperations,
               interval: float) -> DurabilityRounds:
    """Set a mount up for -o durability=batch; CasfsError when the store cannot."""
    bulk = BulkLoad(store)
    writer.catalog.relax_commits()
    ops.files.durable_close = False
    writer.rounds.gather = GATHER_S
    behind = ops.behind = ClosesBehind(ops.finalize, ops.files.release)
    log.info("bulk load: closes are registered behind them and durable in rounds, "
             "every %gs, on fsync and at unmount; a crash loses at most the closes "
             "since the last round", interval)
    return DurabilityRounds(bulk, writer, interval, behind.drained)


def _link_first(store: Store) -> LinkFirst | None:
    """The marker that lets a durable mount's rounds link first (casfs.link_first);
    None on shared storage, or when it cannot be written (rounds then sync first)."""
    blobs = bulk_load.local_blobs(store)
    if blobs is None:
        return None
    try:
        return LinkFirst(store, blobs)
    except OSError as e:
        log.warning("rounds sync bytes before they link (slower): cannot write a marker "
                    "in %s: %s", store.layout.run, e)
        return None


def _clean_staging(store: Store) -> None:
    """Remove staging files left by processes that died (fsck's own check and repair)."""
    leftovers = list(fsck.check_staging(store))
    for problem in leftovers:
        fsck.repair(store, problem)
    if leftovers:
        log.info("removed %d staging file(s) left by dead processes", len(leftovers))


def _report(ready_fd: int | None, error: str | None) -> None:
    if error is not None:
        log.error("%s", error)
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, READY if error is None else error.encode() + b"\n")
    finally:
        os.close(ready_fd)


async def _serve(ops: CasfsOperations, metrics_port: int | None,
                 link_first: LinkFirst | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal)
        if metrics_port is not None:
            await nursery.start(metrics_http.serve, metrics_port,
                                lambda: ops.control.content(control.METRICS_INO))
        if ops.durability is not None:
            nursery.start_soon(ops.durability.run)
        if link_first is not None:
            nursery.start_soon(_advance, link_first)
        await pyfuse3.main()
        if ops.behind is not None:  # closes answered before they were registered
            await ops.behind.drained()
            if ops.behind.failed:
                log.error("%d file(s) closed in this bulk load could not be registered "
                          "(each is named above)", ops.behind.failed)
        nursery.cancel_scope.cancel()


async def _advance(link_first: LinkFirst) -> None:
    """Move a durable mount's marker forward now and then, off the event loop."""
    while True:
        await trio.sleep(ADVANCE_S)
        try:
            await trio.to_thread.run_sync(link_first.advance)
        except OSError as e:  # the mount goes on: an older marker only checks more
            log.error("could not move %s forward: %s", link_first.marker.path, e)


def _instrument(store: Store) -> Catalog | None:
    """Export the counters to OpenTelemetry when its API is installed.

    The SDK reads them from its own thread, so it gets a connection of its own.
    """
    try:
        import opentelemetry.metrics  # noqa: F401
    except ImportError:
        return None
    reader = store.open_catalog(readonly=True)
    lock = threading.Lock()

    def read() -> list[tuple[str, str, int]]:
        with lock:
            return reader.counters()

    metrics.instrument(read)
    return reader


async def _stop_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


# -- unmounting -------------------------------------------------------------------
def unmount(mountpoint: Path, timeout: float = 60.0) -> None:
    """Unmount and wait until the daemon has finished (all finalizes done)."""
    mountpoint = mountpoint.absolute()
    store = mounted_store(mountpoint)
    if store is None:
        if _is_stale(mountpoint):
            _fusermount("-u", "-z", str(mountpoint))
            return
        raise CasfsError(f"{mountpoint} is not a casfs mount")
    pidfile = mount_pid_file(StoreLayout(store), mountpoint)
    pid = read_pid(pidfile)
    result = _fusermount("-u", str(mountpoint))
    if result.returncode != 0:
        raise CasfsError(f"cannot unmount {mountpoint}: {result.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while pid is not None and pid_alive(pid):
        if time.monotonic() > deadline:
            raise CasfsError(f"daemon {pid} of {mountpoint} did not exit in {timeout:g}s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """The daemon's own entry point: `python -m casfs.mount` (used by `start`)."""
    parser = argparse.ArgumentParser(prog="python -m casfs.mount",
                                     description="Serve a casfs mount in the foreground.")
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("-o", dest="options", action="append", default=[])
    parser.add_argument("mountpoint", type=Path)
    args = parser.parse_args(argv)
    try:
        options = MountOptions.parse(args.options, MountConfig())
    except CasfsError as e:
        _report(args.ready_fd, str(e))
        return 2
    return run(args.store, args.mountpoint.absolute(), options, args.ready_fd)
