"""Writers, an import, gc --apply and verify on one store at the same time, for a
bounded time: afterwards fsck passes and every committed file is intact."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from casfs import fsck
from casfs.store import Store

from .conftest import Mounter
from .runs import Run


def casfs(store: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "casfs.tools", "--store", str(store),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_writers_import_gc_and_verify_at_once(mounter: Mounter, tmp_path: Path) -> None:
    mnt = mounter.mount()
    seconds = float(os.environ.get("CASFS_STRESS_SECONDS", "10"))
    stop = time.monotonic() + seconds
    shared = [f"shared payload {i}".encode() * 500 for i in range(4)]
    committed: dict[Path, bytes] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        directory = mnt / "stress" / f"W{k}"
        directory.mkdir(parents=True, exist_ok=True)
        i = 0
        try:
            while time.monotonic() < stop:
                path = directory / f"f{i % 7}.bin"
                data = shared[i % len(shared)] if i % 3 else os.urandom(20_000)
                path.write_bytes(data)
                with lock:
                    committed[path] = data
                if i % 5 == 4:  # garbage for gc, often with bytes written again soon
                    path.unlink()
                    with lock:
                        del committed[path]
                i += 1
        except BaseException as e:
            errors.append(e)

    run = Run(tmp_path / "run")
    for i in range(300):
        run.add_file(f"W{i}", data=shared[i % len(shared)] if i % 2 else None)
    run.write()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    importer = casfs(mounter.store_path, "import-manifest", str(run.manifest), "--apply",
                     "--json")
    verifier = casfs(mounter.store_path, "verify", "--jobs", "2", "--json")
    gc_rounds = 0
    while time.monotonic() < stop:
        gc = casfs(mounter.store_path, "gc", "--grace", "0", "--keep-history", "0",
                   "--apply", "--json")
        out, err = gc.communicate(timeout=120)
        assert gc.returncode == 0, err
        gc_rounds += 1
    for t in threads:
        t.join()
    imported, err = importer.communicate(timeout=300)
    assert importer.returncode == 0, err
    assert json.loads(imported)["error_count"] == 0
    verified, err = verifier.communicate(timeout=300)
    assert verifier.returncode == 0, verified + err
    assert not errors, errors
    assert gc_rounds >= 2

    for path, data in committed.items():
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
    for key, data in run.files.items():
        resolver, work_id, _ = key.split("/", 2)
        names = os.listdir(mnt / resolver / work_id)
        assert [(mnt / resolver / work_id / n).read_bytes() for n in names] == [data]
    with Store.open(mounter.store_path) as store:
        assert fsck.fsck(store) == []
    final = casfs(mounter.store_path, "verify", "--json")
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0 and json.loads(out)["failed"] == 0
