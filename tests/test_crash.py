"""SIGKILL the mount daemon during ingest, again and again: every file whose close()
returned 0 survives with the right bytes, no record points at a missing or wrong
blob, and fsck is clean after each recovery. Several writers close files at once,
so that the kill also lands in group commits (closes sharing one transaction).

CASFS_CRASH_CYCLES sets the number of cycles (default 20).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from casfs import fsck
from casfs.store import Store

from .conftest import ALL_BACKENDS, Mounter

pytestmark = ALL_BACKENDS

WRITERS = 4  # at once, each in a directory of its own

# Writes files (some new, some overwriting earlier names) in crash/DIR. Prints
# "try DIR/name sha256" before each one and "ok DIR/name sha256" after its close()
# returned 0. Dies when the mount goes away under it.
WRITER = r"""
import hashlib, os, random, sys
root, seed, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
os.makedirs(os.path.join(root, "crash", directory), exist_ok=True)
i = 0
while True:
    name = f"f{rng.randrange(12)}.bin" if rng.random() < 0.3 else f"c{seed}-{i}.bin"
    data = rng.randbytes(rng.choice([100, 5000, 300_000, 2_000_000]))
    sha = hashlib.sha256(data).hexdigest()
    print("try", f"{directory}/{name}", sha, flush=True)
    path = os.path.join(root, "crash", directory, name)
    with open(path, "wb") as f:
        for offset in range(0, len(data), 65536):
            f.write(data[offset:offset + 65536])
    print("ok", f"{directory}/{name}", sha, flush=True)
    i += 1
"""


def kill_daemon(store_path: Path) -> None:
    pidfile = next((store_path / "run").glob("mount-*.json"))
    os.kill(json.loads(pidfile.read_text())["pid"], signal.SIGKILL)


def check(mnt: Path, store_path: Path, committed: dict[str, set[str]]) -> None:
    """Each committed file holds its last confirmed bytes, or the bytes of a later
    attempt whose registration committed just before the kill (its close() had no
    time to return): never older bytes, never anything else."""
    for name, allowed in committed.items():
        data = (mnt / "crash" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() in allowed, name
    with Store.open(store_path) as store:
        problems = fsck.fsck(store)
        assert problems == [], problems
        for doc in store.catalog.iter_live_documents():
            assert store.blobs.has(doc.sha256), doc


def test_sigkill_during_ingest_loses_no_committed_file(mounter: Mounter) -> None:
    cycles = int(os.environ.get("CASFS_CRASH_CYCLES", "20"))
    rng = random.Random(42)
    committed: dict[str, set[str]] = {}  # name -> last confirmed sha, and later tries
    deadline = time.monotonic() + 240
    for cycle in range(cycles):
        assert time.monotonic() < deadline, f"only {cycle} cycles in the time allowed"
        mnt = mounter.mount()  # also recovers the mountpoint the last kill left behind
        check(mnt, mounter.store_path, committed)
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(mnt),
                                     str(cycle * WRITERS + k), f"A{k}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True) for k in range(WRITERS)]
        time.sleep(rng.uniform(0.05, 0.5))
        kill_daemon(mounter.store_path)
        out = "".join(writer.communicate(timeout=60)[0] for writer in writers)
        for line in out.splitlines():
            kind, name, sha = line.split()
            if kind == "ok":
                committed[name] = {sha}
            elif name in committed:
                committed[name].add(sha)  # an overwrite that may have committed
    mnt = mounter.mount()
    check(mnt, mounter.store_path, committed)
    assert len(committed) >= cycles, "the writer committed too little to prove anything"
    assert list((mounter.store_path / "tmp").iterdir()) == []
    verify = subprocess.run([sys.executable, "-m", "casfs.tools", "--store",
                             str(mounter.store_path), "verify"], capture_output=True)
    assert verify.returncode == 0, verify.stdout
