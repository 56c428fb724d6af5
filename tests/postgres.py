"""A throwaway PostgreSQL server for the tests: real, started and stopped by them.

`initdb` runs once per session into a template directory; a server is a copy of it,
started on a unix socket in its own directory (and, when asked, on a loopback TCP
port) with fsync off, stopped with a fast shutdown. As root, the server runs as the
`postgres` user (or `nobody`): PostgreSQL refuses to run as root. Each test gets a
database of its own, made from the server's template.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
            "/usr/lib/postgresql/17/bin")


def bin_dir() -> Path | None:
    for candidate in BIN_DIRS:
        if Path(candidate, "postgres").is_file():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sweep_stale_servers() -> None:
    """Stop the servers of test runs that were killed before their teardown (the
    owner's pid is in each server's directory) and remove their directories."""
    for directory in Path("/tmp").glob("casfs-pg-*"):
        try:
            owner = int((directory / "owner").read_text())
            os.kill(owner, 0)
            continue  # its run is alive
        except (OSError, ValueError):
            pass
        try:
            server = int((directory / "data" / "postmaster.pid").read_text().split()[0])
            os.kill(server, signal.SIGINT)
            for _ in range(100):
                os.kill(server, 0)
                time.sleep(0.05)
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(directory, ignore_errors=True)


class PostgresServer:
    def __init__(self, tcp: bool = False) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql-15)")
        self.bin = found
        self.user = _server_user()
        # Short and traversable by the server's user: the socket path must fit 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="casfs-pg-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        (self.dir / "owner").write_text(str(os.getpid()))
        self.data = self.dir / "data"
        self.port = _free_port() if tcp else 5432
        self.tcp = tcp
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()

    def _as_server_user(self) -> dict[str, int]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid}

    def start(self) -> PostgresServer:
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "casfs",
                        "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                       check=True, capture_output=True, **self._as_server_user())
        return self._launch()

    def _launch(self) -> PostgresServer:
        listen = "127.0.0.1" if self.tcp else ""
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", f"listen_addresses={listen}", "-c", f"unix_socket_directories={self.dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "server.log", "ab"),  # noqa: SIM115
            start_new_session=True, **self._as_server_user())
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / "server.log").read_text(errors="replace")
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start:\n{log[-2000:]}") from None
                time.sleep(0.02)

    def _processes(self) -> list[int]:
        """The postmaster and every process it started (each is a session of its own,
        so a signal to the postmaster's group reaches only the postmaster)."""
        assert self.process is not None
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)],
                                  capture_output=True, text=True).stdout.split()
        return [self.process.pid, *map(int, children)]

    def pause(self) -> None:
        """SIGSTOP to every process of the server: it answers nothing and closes
        nothing, as a server whose host is cut off by a network that drops packets."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def shut_down(self) -> None:
        """Stop the server (a fast shutdown: its connections are closed), keeping its
        data for `start_again`."""
        if self.process is not None and self.process.poll() is None:
            self.resume()  # a paused server would never stop
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)
        self.process = None

    def start_again(self) -> PostgresServer:
        """Start the server that `shut_down` stopped, on the same data and socket."""
        return self._launch()

    def url(self, database: str, *, tcp: bool | None = None) -> str:
        if tcp if tcp is not None else False:
            return f"postgresql://casfs@127.0.0.1:{self.port}/{database}"
        return f"postgresql://casfs@/{database}?host={self.dir}&port={self.port}"

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.resume()  # a paused server would never stop
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
