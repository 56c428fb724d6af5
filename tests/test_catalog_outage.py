"""A catalog server that goes away: stopped answering (frozen) or restarted.

A mount must neither die nor hang: a FUSE request the daemon has taken is waited for
by the kernel uninterruptibly, so a request stuck on a silent server leaves its
process unkillable. Each request gets EIO within `-o catalog_timeout`, the mount
stays up, and once the server answers again the same mount works, without a
remount. These tests run their own PostgreSQL server, since they stop it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casfs.catalog.postgres.database import PostgresDatabase
from casfs.config import MountConfig
from casfs.errors import CasfsError, CatalogUnavailable
from casfs.mount import boundary
from casfs.mount.options import DEFAULT_CATALOG_TIMEOUT_S, MountOptions
from casfs.store import Store

from .conftest import POSTGRES_REQUIRED, Mounter, missing
from .postgres import PostgresServer, bin_dir

BOUND_S = 2.0  # -o catalog_timeout in these tests
SLACK_S = 8.0  # what a loaded machine may add to the bound (a request, its retries)


def test_the_bound_is_an_option_with_a_default_and_0_for_none() -> None:
    def parse(*options: str) -> MountOptions:
        return MountOptions.parse(list(options), MountConfig())

    assert parse().catalog_timeout == DEFAULT_CATALOG_TIMEOUT_S
    assert parse("catalog_timeout=2.5").catalog_timeout == 2.5
    assert parse("catalog_timeout=0").catalog_timeout is None
    for options in (parse("catalog_timeout=0"), parse("catalog_timeout=7")):  # to the daemon
        assert MountOptions.parse(options.to_strings()[1:], MountConfig()) == options
    for bad in ("catalog_timeout=soon", "catalog_timeout=-1", "catalog_timeout=1e9"):
        with pytest.raises(CasfsError, match="-o catalog_timeout needs seconds"):
            parse(bad)


def test_an_outage_is_logged_once_per_interval_and_counted_whole(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    failures = boundary.Unreachable(clock=lambda: now[0])
    error = CatalogUnavailable("the catalog server cannot be reached: no answer within 2 s")
    with caplog.at_level("ERROR", logger="casfs.mount"):
        for _ in range(500):  # a pipeline retrying for 10 s
            failures.failed("lookup", error)
            now[0] += 0.02
        now[0] += boundary.UNREACHABLE_LOG_EVERY_S
        failures.failed("create", error)
    assert failures.count == 501
    assert [r.getMessage() for r in caplog.records] == [
        "lookup: the catalog server cannot be reached: no answer within 2 s",
        "create: the catalog server cannot be reached: no answer within 2 s "
        "(499 more requests failed so since the last such line)"]


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    if bin_dir() is None:
        missing("PostgreSQL is not installed here (contrib/dev.sh installs postgresql-15)",
                required=POSTGRES_REQUIRED)
    started = PostgresServer().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def url(server: PostgresServer) -> str:
    return server.url(server.create_database())


def run(*command: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """`command`, and how long it took; a hang fails the test (after 60 s)."""
    started = time.monotonic()
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                          timeout=60, check=False)
    return done, time.monotonic() - started


def test_a_call_to_a_silent_server_fails_within_the_bound_and_the_next_reconnects(
        server: PostgresServer, url: str) -> None:
    db = PostgresDatabase(url, answer_within=BOUND_S)
    try:
        db.execute("CREATE TABLE t (x int)")
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(CatalogUnavailable, match="no answer"):
                db.one("SELECT count(*) FROM t")
            assert BOUND_S <= time.monotonic() - started < BOUND_S + SLACK_S
        finally:
            server.resume()
        assert db.one("SELECT count(*) FROM t") == (0,)  # a new connection
    finally:
        db.close()


def test_a_restart_between_two_calls_goes_unnoticed(server: PostgresServer,
                                                   url: str) -> None:
    """The server closed the idle connection: the next call opens a new one rather
    than failing on it."""
    db = PostgresDatabase(url, answer_within=BOUND_S)
    try:
        assert db.one("SELECT 1") == (1,)
        server.shut_down()
        server.start_again()
        assert db.one("SELECT 1") == (1,)
        with db.transaction():
            db.execute("CREATE TABLE t (x int)")
        server.shut_down()
        with pytest.raises(CatalogUnavailable):  # down: refused at once
            db.one("SELECT 1")
        server.start_again()
        assert db.one("SELECT count(*) FROM t") == (0,)
    finally:
        db.close()


def test_a_transaction_cut_off_by_the_bound_commits_nothing(
        server: PostgresServer, url: str) -> None:
    db = PostgresDatabase(url, answer_within=BOUND_S)
    try:
        db.execute("CREATE TABLE t (x int)")
        with pytest.raises(CatalogUnavailable), db.transaction():
            db.execute("INSERT INTO t VALUES (1)")
            server.pause()
            try:
                db.execute("INSERT INTO t VALUES (2)")
            finally:
                server.resume()
        assert db.one("SELECT count(*) FROM t") == (0,)
    finally:
        db.close()


@pytest.fixture
def mounted(url: str, tmp_path: Path) -> Iterator[Mounter]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing")
    Store.init(tmp_path / "store", catalog=url).close()
    mounter = Mounter(tmp_path / "store", tmp_path / "mnt")
    try:
        yield mounter
    finally:
        mounter.cleanup()


def written_before(mnt: Path, tmp_path: Path) -> Path:
    """A file copied in as `r/a1/before` while the server answers; its source."""
    source = tmp_path / "source"
    source.write_bytes(os.urandom(5000))
    (mnt / "r" / "a1").mkdir(parents=True)
    assert run("cp", source, mnt / "r" / "a1" / "before")[0].returncode == 0
    return source


def test_a_mount_answers_eio_within_the_bound_while_its_server_is_silent(
        server: PostgresServer, mounted: Mounter, tmp_path: Path) -> None:
    options = ("cache_timeout=1", f"catalog_timeout={BOUND_S:g}")
    source = written_before(mounted.mount(*options), tmp_path)
    mnt = mounted.remount(*options)  # nothing of the tree known: every name is asked

    server.pause()
    try:
        for command in (("stat", mnt / "r" / "a1" / "before"),
                        ("cp", source, mnt / "r" / "a1" / "during"),
                        ("ls", "-l", mnt / "r")):
            done, took = run(*command)
            assert done.returncode != 0, command
            assert "Input/output error" in done.stderr, (command, done.stderr)
            assert took < BOUND_S + SLACK_S, (command, took)
        assert os.path.ismount(mnt)
    finally:
        server.resume()

    # The same mount, once the server answers again.
    assert run("cmp", source, mnt / "r" / "a1" / "before")[0].returncode == 0
    assert run("cp", source, mnt / "r" / "a1" / "after")[0].returncode == 0
    assert sorted(os.listdir(mnt / "r" / "a1")) == ["after", "before"]
    # Counted, each of them; logged once (the next line only 30 s later).
    metrics = (mnt / ".casfs" / "metrics").read_text().splitlines()
    failures = next(line for line in metrics if line.startswith("casfs_mount_catalog_failures "))
    assert float(failures.split()[1]) >= 3
    log = (mounted.store_path / "log" / "mount.log").read_text()
    assert log.count(f"cannot be reached: no answer within {BOUND_S:g} s") == 1


def test_a_mount_works_again_once_its_server_is_back_from_a_restart(
        server: PostgresServer, mounted: Mounter, tmp_path: Path) -> None:
    mnt = mounted.mount("cache_timeout=1")
    source = written_before(mnt, tmp_path)
    time.sleep(1.5)  # past cache_timeout: the next names are asked of the server

    server.shut_down()
    try:
        done, took = run("cp", source, mnt / "r" / "a1" / "during")
        assert done.returncode != 0 and "Input/output error" in done.stderr
        assert took < SLACK_S  # refused at once: nothing to wait for
        assert os.path.ismount(mnt)
    finally:
        server.start_again()

    assert run("cp", source, mnt / "r" / "a1" / "after")[0].returncode == 0
    assert run("cmp", source, mnt / "r" / "a1" / "after")[0].returncode == 0
    assert sorted(os.listdir(mnt / "r" / "a1")) == ["after", "before"]
    log = mounted.store_path / "log" / "mount.log"
    deadline = time.monotonic() + 30
    while "listening to the catalog's announcements again" not in log.read_text():
        assert time.monotonic() < deadline, "the mount did not listen again"
        time.sleep(0.5)
