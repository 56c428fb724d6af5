"""The casfs command line: init, put, stats, mount/umount, mount.casfs, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casfs.config import load_config
from casfs.mount.daemon import mounted_store
from casfs.tools import cli, mount_helper

from .conftest import Mounter, needs_fuse


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=False)


def test_init_creates_the_store_and_a_config_naming_it(tmp_path: Path,
                                                        isolated_config: Path) -> None:
    store = tmp_path / "s"
    result = run("--store", str(store), "init")
    assert result.returncode == 0, result.stderr
    assert (store / "catalog.db").is_file() and (store / "cas" / "sha256").is_dir()
    assert load_config(isolated_config).store == store
    # The config now finds the store without --store.
    stats = run("stats", "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["store"] == str(store)


def test_casfs_store_comes_from_the_environment(tmp_path: Path) -> None:
    store = tmp_path / "env-store"
    assert run("init", env={"CASFS_STORE": str(store)}).returncode == 0
    assert (store / "catalog.db").is_file()


def test_put_and_stats_json(store_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.pdf"
    src.write_bytes(b"%PDF-1.7 hello")
    out = run("--store", str(store_path), "put", str(src), "--resolver", "unpaywall",
              "--artifact", "W1", "--source-url", "https://pub.example/a.pdf", "--json")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["path"] == "/unpaywall/W1/a.pdf" and record["outcome"] == "added"
    assert record["created_at"].endswith("Z")
    again = run("--store", str(store_path), "put", str(src), "--resolver", "crossref",
                "--artifact", "W1", "--name", "copy.pdf")
    assert again.returncode == 0 and "already stored" in again.stdout
    stats = json.loads(run("--store", str(store_path), "stats", "--json").stdout)
    assert {k: stats[k] for k in ("documents", "blobs", "logical_bytes", "physical_bytes")} == {
        "documents": 2, "blobs": 1, "logical_bytes": 28, "physical_bytes": 14}
    assert stats["catalog"].startswith("sqlite://") and stats["catalog"].endswith("/catalog.db")
    assert stats["blob_store"] == f"file://{store_path}"


@pytest.mark.parametrize(("args", "message"), [
    (["put", "/nonexistent", "--resolver", "r", "--artifact", "a"], "not a readable file"),
    (["stats"], "no casfs store"),
    (["mount", "/tmp", "-o", "bogus"], "unknown mount option 'bogus'"),
])
def test_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run("--store", str(tmp_path / "missing"), *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_bad_config_file_names_the_key(isolated_config: Path) -> None:
    isolated_config.parent.mkdir(parents=True, exist_ok=True)
    isolated_config.write_text("[mount]\ncache_timeout = 'x'\n")
    result = run("stats")
    assert result.returncode == 2 and "mount.cache_timeout" in result.stderr


def test_help_explains_every_command() -> None:
    result = run("--help")
    for command in ("init", "mount", "umount", "put", "stats"):
        assert command in result.stdout
    assert "cache_timeout" in run("mount", "--help").stdout


@needs_fuse
def test_mount_helper_mounts_like_fstab_would(store_path: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        assert mount_helper.main([str(store_path), str(mnt), "-o", "rw,noauto,_netdev,ro"]) == 0
        assert mounted_store(mnt) == store_path
        with open("/proc/mounts") as f:
            line = next(x for x in f if f" {mnt} " in x)
        assert " fuse.casfs " in line and " ro," in line
    finally:
        cli.main(["umount", str(mnt)])
    assert mount_helper.main([str(store_path), str(mnt), "-o", "nonsense"]) == 32


@needs_fuse
def test_mount_recovers_a_mountpoint_whose_daemon_was_killed(mounter: Mounter) -> None:
    mnt = mounter.mount()
    (mnt / "r" / "a").mkdir(parents=True)
    (mnt / "r" / "a" / "f.txt").write_bytes(b"committed")
    pidfile = next((mounter.store_path / "run").iterdir())
    os.kill(json.loads(pidfile.read_text())["pid"], signal.SIGKILL)
    time.sleep(0.3)
    with pytest.raises(OSError):
        os.listdir(mnt)  # Transport endpoint is not connected
    mounter.mount()
    assert (mnt / "r" / "a" / "f.txt").read_bytes() == b"committed"


@needs_fuse
def test_mounting_twice_is_refused(mounter: Mounter) -> None:
    mounter.mount()
    result = run("--store", str(mounter.store_path), "mount", str(mounter.mountpoint))
    assert result.returncode == 2 and "already a mountpoint" in result.stderr


@needs_fuse
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/sbin/mount.fuse.casfs"),
                    reason="needs root and /sbin/mount.fuse.casfs (contrib/dev.sh setup)")
def test_mount_8_mounts_a_fuse_casfs_fstab_entry(store_path: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "fuse.casfs", "-o", "ro,noauto,_netdev",
                        str(store_path), str(mnt)], check=True)
        assert mounted_store(mnt) == store_path
        assert os.listdir(mnt) == []
    finally:
        cli.main(["umount", str(mnt)])
    assert not os.path.ismount(mnt)


def test_bash_completion_knows_every_command_and_option(tmp_path: Path) -> None:
    script = tmp_path / "casfs.bash"
    result = run("completion", "bash")
    assert result.returncode == 0
    script.write_text(result.stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in ("casfs", *words))
        out = subprocess.run(
            ["bash", "-c", f"source {script}; COMP_WORDS=({line}); "
                           f"COMP_CWORD={len(words)}; _casfs; echo \"${{COMPREPLY[@]}}\""],
            capture_output=True, text=True, check=True).stdout
        return out.split()

    assert complete("imp") == ["import-manifest"]
    assert "--keep-history" in complete("--store", "/s", "gc", "--")
    assert set(complete("")) >= {"init", "mount", "umount", "put", "stats", "verify", "gc",
                                 "fsck", "backup", "restore", "history", "bench"}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts a tmpfs)")
def test_a_full_store_says_so_changes_nothing_and_exits_2(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        store = small / "store"
        assert run("--store", str(store), "init").returncode == 0
        big = tmp_path / "big.pdf"
        big.write_bytes(os.urandom(3 << 20))
        result = run("--store", str(store), "put", str(big), "--resolver", "r",
                     "--artifact", "a")
        assert result.returncode == 2
        assert "cannot store" in result.stderr and "No space left" in result.stderr
        assert "Traceback" not in result.stderr and "cannot read" not in result.stderr
        assert list((store / "tmp").iterdir()) == []
        assert json.loads(run("--store", str(store), "stats", "--json").stdout)[
            "documents"] == 0
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)

