"""Hostile input where a user can reach casfs, and the security promises.

Names given to the mount are in test_mount_safety.py, manifests in test_import.py,
config files in test_config.py; this file covers stores, identifiers and names given
to the tools, other users, file modes, and shells."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from casfs.catalog.sqlite.schema import SCHEMA_VERSION
from casfs.mount.attributes import access_allowed
from casfs.tools import cli

from .conftest import Mounter, needs_root

REPOSITORY = Path(__file__).resolve().parent.parent


def casfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", *args], capture_output=True,
                          text=True, check=False)


def as_nobody(*args: str) -> tuple[int, str]:
    """Run `casfs ARGS` in a forked child that dropped root (the interpreter is loaded)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 99
        try:
            sys.stderr = os.fdopen(write, "w")
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = cli.main(list(args))
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_a_store_with_a_missing_directory_is_refused(store_path: Path) -> None:
    (store_path / "tmp").rmdir()
    result = casfs("--store", str(store_path), "stats")
    assert result.returncode == 2 and "tmp/ is missing" in result.stderr


def test_a_catalog_from_a_newer_casfs_is_refused_by_the_tools(store_path: Path) -> None:
    conn = apsw.Connection(str(store_path / "catalog.db"))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    result = casfs("--store", str(store_path), "stats")
    assert result.returncode == 2 and "newer than this casfs" in result.stderr
    assert "Traceback" not in result.stderr


@needs_root
def test_a_store_another_user_cannot_read_gets_a_clear_error(tmp_path: Path,
                                                             store_path: Path) -> None:
    tmp_path.chmod(0o755)
    store_path.chmod(0o700)
    code, err = as_nobody("--store", str(store_path), "stats")
    assert code == 2, err
    assert "Permission denied" in err and "Traceback" not in err


def test_a_file_that_is_not_a_catalog_is_refused(store_path: Path) -> None:
    (store_path / "catalog.db").write_bytes(b"this is not SQLite" * 100)
    result = casfs("--store", str(store_path), "stats")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--resolver", "r", "--artifact", ""], "invalid identifier"),
    (["--resolver", "r", "--artifact", "a", "--name", ".."], "cannot use"),
])
def test_hostile_identifiers_and_names_for_put_are_refused(
        store_path: Path, tmp_path: Path, args: list[str], message: str) -> None:
    src = tmp_path / "a.pdf"
    src.write_bytes(b"x")
    result = casfs("--store", str(store_path), "put", str(src), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "documents:      0" in casfs("--store", str(store_path), "stats").stdout


def test_a_nul_in_an_identifier_is_refused(store_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "a.pdf"
    src.write_bytes(b"x")  # a NUL cannot pass through argv: call main directly
    assert cli.main(["--store", str(store_path), "put", str(src), "--resolver", "a\0b",
                     "--artifact", "a"]) == 2


def test_a_name_with_separators_stays_inside_its_artifact(store_path: Path,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "a.pdf"
    src.write_bytes(b"x")
    before = sorted(tmp_path.iterdir())
    result = casfs("--store", str(store_path), "put", str(src), "--resolver", "..",
                   "--artifact", "../../etc", "--name", "../../passwd", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "/%2E%2E/..%2F..%2Fetc/.._.._passwd"
    assert sorted(tmp_path.iterdir()) == before  # nothing written outside the store


@pytest.fixture
def open_mounter(store_path: Path) -> Iterator[Mounter]:
    """A mountpoint other users can reach (pytest's own temp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="casfs-shared-"))
    base.chmod(0o755)
    mounter = Mounter(store_path, base / "mnt")
    try:
        yield mounter
    finally:
        mounter.cleanup()
        shutil.rmtree(base, ignore_errors=True)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@needs_root
def test_other_users_get_eacces_without_allow_other(open_mounter: Mounter) -> None:
    mnt = open_mounter.mount()
    (mnt / "r" / "a").mkdir(parents=True)
    (mnt / "r" / "a" / "f.txt").write_bytes(b"private")
    for command in (["cat", str(mnt / "r" / "a" / "f.txt")], ["ls", str(mnt)]):
        result = subprocess.run([*NOBODY, *command], capture_output=True, text=True,
                                check=False)
        assert result.returncode != 0 and "Permission denied" in result.stderr, command
    assert subprocess.run([*NOBODY, "ls", str(mnt.parent)], capture_output=True,
                          check=False).returncode == 0  # the directory above is reachable


@needs_root
def test_allow_other_lets_others_read_but_not_write(open_mounter: Mounter) -> None:
    mnt = open_mounter.mount()
    (mnt / "r" / "a").mkdir(parents=True)
    (mnt / "r" / "a" / "f.txt").write_bytes(b"shared")
    mnt = open_mounter.remount("allow_other")
    read = subprocess.run([*NOBODY, "cat", str(mnt / "r" / "a" / "f.txt")],
                          capture_output=True, text=True, check=False)
    assert read.returncode == 0 and read.stdout == "shared"
    write = subprocess.run([*NOBODY, "touch", str(mnt / "r" / "a" / "g.txt")],
                           capture_output=True, text=True, check=False)
    assert write.returncode != 0 and "Permission denied" in write.stderr
    assert not (mnt / "r" / "a" / "g.txt").exists()


def test_access_answers_as_the_modes_do(mnt: Path) -> None:
    """Without allow_other the kernel leaves access(2) to the mount (it checks no
    modes itself then): the answers are still what the modes say."""
    (mnt / "r" / "a").mkdir(parents=True)
    doc = mnt / "r" / "a" / "f.txt"
    doc.write_bytes(b"bytes")
    assert os.access(doc, os.R_OK | os.W_OK) and not os.access(doc, os.X_OK)
    assert os.access(mnt / "r" / "a", os.R_OK | os.W_OK | os.X_OK)
    assert not os.access(mnt / "r" / "a" / "absent", os.F_OK)
    assert subprocess.run(["sh", "-c", f"test -x '{doc}'"], check=False).returncode == 1
    assert os.access(mnt / ".casfs" / "metrics", os.R_OK)


@pytest.mark.parametrize(("mode", "asked", "uid", "allowed"), [
    (stat.S_IFREG | 0o644, os.R_OK | os.W_OK, 1000, True),
    (stat.S_IFREG | 0o644, os.X_OK, 1000, False),
    (stat.S_IFREG | 0o444, os.W_OK, 1000, False),  # /.casfs files, read-only views
    (stat.S_IFDIR | 0o555, os.R_OK | os.X_OK, 1000, True),
    (stat.S_IFDIR | 0o555, os.W_OK, 1000, False),
    (stat.S_IFREG | 0o444, os.W_OK, 0, True),  # root writes what its modes forbid
    (stat.S_IFREG | 0o444, os.X_OK, 0, False),  # but runs only what has an x bit
    (stat.S_IFDIR | 0o555, os.X_OK, 0, True),
    (stat.S_IFREG | 0o644, os.F_OK, 1000, True),
])
def test_access_allowed_follows_the_owner_bits(mode: int, asked: int, uid: int,
                                               allowed: bool) -> None:
    assert access_allowed(mode, asked, uid) is allowed


def test_blobs_are_read_only_and_the_catalog_is_not_world_writable(mnt: Path,
                                                                   mounter: Mounter) -> None:
    (mnt / "r" / "a").mkdir(parents=True)
    (mnt / "r" / "a" / "f.txt").write_bytes(b"bytes")
    store = mounter.store_path
    blobs = [p for p in (store / "cas").rglob("*") if p.is_file()]
    assert blobs and all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in blobs)
    for path in [store, store / "catalog.db", *store.iterdir()]:
        assert not path.stat().st_mode & stat.S_IWOTH, path


def test_no_shell_is_ever_invoked() -> None:
    """No subprocess call with shell=True, no os.system/os.popen, anywhere in casfs."""
    offenders = []
    for folder in ("casfs", "mount", "tools"):
        for source in (REPOSITORY / folder).rglob("*.py"):
            tree = ast.parse(source.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.keyword) and node.arg == "shell":
                    offenders.append(f"{source}:{node.value.lineno} shell=")
                if isinstance(node, ast.Attribute) and node.attr in ("system", "popen") \
                        and isinstance(node.value, ast.Name) and node.value.id == "os":
                    offenders.append(f"{source}:{node.lineno} os.{node.attr}")
    assert offenders == []
