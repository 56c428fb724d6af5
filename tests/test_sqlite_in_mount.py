"""SQLite databases in the mount: every journal mode, synchronous FULL and NORMAL,
two connections, hundreds of transactions; the rows a model expects are there after
reopening and after a remount, and integrity_check says ok."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from pathlib import Path

import pytest

from .conftest import ALL_BACKENDS, Mounter

pytestmark = ALL_BACKENDS

TRANSACTIONS = 200


def connect(path: Path, journal: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def check(path: Path, expected: dict[int, str]) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert dict(conn.execute("SELECT id, value FROM t")) == expected
    finally:
        conn.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
@pytest.mark.parametrize("journal", ["DELETE", "TRUNCATE", "WAL"])
def test_sqlite_keeps_every_committed_row(mounter: Mounter, journal: str,
                                          synchronous: str) -> None:
    mnt = mounter.mount()
    directory = mnt / "db" / "a"
    directory.mkdir(parents=True)
    path = directory / "c.db"
    rng = random.Random(f"{journal}-{synchronous}")
    first, second = connect(path, journal, synchronous), connect(path, journal, synchronous)
    first.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, value TEXT)")
    expected: dict[int, str] = {}
    for n in range(TRANSACTIONS):
        conn = first if n % 2 else second
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(rng.randrange(1, 6)):
            key = rng.randrange(1, 400)
            if key in expected and rng.random() < 0.3:
                conn.execute("DELETE FROM t WHERE id = ?", (key,))
                del expected[key]
            else:
                value = rng.randbytes(rng.choice([10, 300, 3000])).hex()
                conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (key, value))
                expected[key] = value
        conn.execute("COMMIT")
        if n % 50 == 0:  # the other connection sees every commit
            other = second if conn is first else first
            assert other.execute("SELECT count(*) FROM t").fetchone()[0] == len(expected)
    first.close()
    second.close()
    check(path, expected)
    mounter.remount()
    check(path, expected)


def test_the_sqlite3_shell_reads_its_own_rows(mnt: Path) -> None:
    directory = mnt / "db" / "a"
    directory.mkdir(parents=True)
    result = subprocess.run(
        ["sqlite3", str(directory / "c.db"),
         "create table t(x); insert into t values(1),(2),(3); select count(*) from t;"],
        capture_output=True, text=True)  # contrib/dev.sh installs the shell
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
