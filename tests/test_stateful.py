"""Model-based test: random sequences of file operations on a real mount, each
observation compared with a small in-memory model of what casfs promises.

The model is casfs's semantics, not POSIX's where they differ on purpose: a link
is a second record for the same bytes, so writing one later leaves the other
alone (copy-on-write); a content type set with setxattr survives rewrites.
Steps with descriptors held open check law 8: a descriptor reads its own writes
after fsync, a second descriptor reads them too, mapped writes are read back, and
an open file stays readable after unlink and rename-over.

CI runs a bounded number of examples; CASFS_STATEFUL_EXAMPLES=2000 (and
CASFS_STATEFUL_STEPS) runs more.
"""

from __future__ import annotations

import errno
import itertools
import mimetypes
import mmap
import os
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .conftest import ALL_BACKENDS, Mounter

NAMES = ["x.txt", "y.pdf", "z", "w.html"]
KEYS = ["content_type", "run_id"]
VALUES = ["text/csv", "application/x-test", "run-1", "run-2"]
DATA = st.binary(max_size=3000)
_examples = itertools.count()


class FileModel(RuleBasedStateMachine):
    mountpoint: Path

    def __init__(self) -> None:
        super().__init__()
        self.root = self.mountpoint / f"ex{next(_examples)}"  # a fresh resolver each example
        self.dirs: set[Path] = set()
        self.files: dict[Path, bytearray] = {}
        self.meta: dict[Path, dict[str, str | None]] = {}

    # -- helpers -------------------------------------------------------------------
    def _file(self, data: st.DataObject) -> Path:
        return data.draw(st.sampled_from(sorted(self.files)))

    def _dir(self, data: st.DataObject) -> Path:
        return data.draw(st.sampled_from(sorted(self.dirs)))

    def _guess(self, path: Path) -> dict[str, str | None]:
        return {"content_type": mimetypes.guess_type(path.name, strict=False)[0],
                "run_id": None}

    # -- rules ---------------------------------------------------------------------
    @initialize()
    def two_artifacts(self) -> None:
        self.make_artifact(0, 0)
        self.make_artifact(1, 0)

    @precondition(lambda self: len(self.dirs) < 4)
    @rule(resolver=st.integers(0, 1), artifact=st.integers(0, 2))
    def make_artifact(self, resolver: int, artifact: int) -> None:
        path = self.root.parent / f"{self.root.name}r{resolver}" / f"a{artifact}"
        path.mkdir(parents=True, exist_ok=True)
        self.dirs.add(path)

    @precondition(lambda self: self.dirs)
    @rule(data=st.data(), name=st.sampled_from(NAMES), content=DATA)
    def create_or_overwrite(self, data: st.DataObject, name: str, content: bytes) -> None:
        path = self._dir(data) / name
        path.write_bytes(content)
        if path not in self.files:
            self.meta[path] = self._guess(path)
        self.files[path] = bytearray(content)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=st.binary(min_size=1, max_size=500))
    def write_at_offset(self, data: st.DataObject, content: bytes) -> None:
        path = self._file(data)
        buffer = self.files[path]
        offset = data.draw(st.integers(0, len(buffer) + 20))
        with path.open("r+b") as f:
            f.seek(offset)
            f.write(content)
        if offset > len(buffer):
            buffer.extend(b"\0" * (offset - len(buffer)))
        buffer[offset:offset + len(content)] = content

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        path = self._file(data)
        buffer = self.files[path]
        size = data.draw(st.integers(0, len(buffer) + 20))
        os.truncate(path, size)
        del buffer[size:]
        buffer.extend(b"\0" * (size - len(buffer)))

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=DATA)
    def append(self, data: st.DataObject, content: bytes) -> None:
        path = self._file(data)
        with path.open("ab") as f:
            f.write(content)
        self.files[path].extend(content)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), content=st.binary(min_size=1, max_size=5000))
    def write_fsync_and_read_back(self, data: st.DataObject, content: bytes) -> None:
        """Through one descriptor, and a second one opened before the write."""
        path = self._file(data)
        buffer = self.files[path]
        offset = data.draw(st.integers(0, len(buffer)))
        buffer[offset:offset + len(content)] = content
        reader = os.open(path, os.O_RDONLY)
        fd = os.open(path, os.O_RDWR)
        try:
            os.pwrite(fd, content, offset)
            for _ in range(data.draw(st.integers(1, 2))):
                os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.fstat(fd).st_size == len(buffer)
            assert os.pread(fd, len(buffer) + 10, 0) == bytes(buffer)
            assert os.fstat(reader).st_size == len(buffer)
            assert os.pread(reader, len(buffer) + 10, 0) == bytes(buffer)
        finally:
            os.close(fd)
            os.close(reader)

    @precondition(lambda self: any(self.files.values()))
    @rule(data=st.data(), content=st.binary(min_size=1, max_size=3000))
    def mapped_write(self, data: st.DataObject, content: bytes) -> None:
        path = data.draw(st.sampled_from(sorted(p for p, b in self.files.items() if b)))
        buffer = self.files[path]
        offset = data.draw(st.integers(0, len(buffer) - 1))
        content = content[:len(buffer) - offset]
        with path.open("r+b") as f, mmap.mmap(f.fileno(), len(buffer)) as mapped:
            mapped[offset:offset + len(content)] = content
            mapped.flush()
            buffer[offset:offset + len(content)] = content
            assert mapped[:] == bytes(buffer)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def unlink_while_open(self, data: st.DataObject) -> None:
        path = self._file(data)
        content = bytes(self.files.pop(path))
        del self.meta[path]
        with path.open("rb") as reader:
            head = reader.read(len(content) // 2)
            path.unlink()
            assert os.fstat(reader.fileno()).st_size == len(content)
            assert head + reader.read() == content

    @precondition(lambda self: len(self.files) >= 2)
    @rule(data=st.data())
    def rename_over_while_open(self, data: st.DataObject) -> None:
        source = self._file(data)
        target = data.draw(st.sampled_from(sorted(p for p in self.files if p != source)))
        content = bytes(self.files[target])
        with target.open("rb") as reader:
            os.rename(source, target)
            assert os.fstat(reader.fileno()).st_size == len(content)
            assert reader.read() == content
        self.files[target] = self.files.pop(source)
        self.meta[target] = self.meta.pop(source)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def rename(self, data: st.DataObject, name: str) -> None:
        source = self._file(data)
        target = self._dir(data) / name
        os.rename(source, target)
        if target != source:
            self.files[target] = self.files.pop(source)
            self.meta[target] = self.meta.pop(source)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        path = self._file(data)
        path.unlink()
        del self.files[path]
        del self.meta[path]

    @precondition(lambda self: self.files)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def link(self, data: st.DataObject, name: str) -> None:
        source = self._file(data)
        target = self._dir(data) / name
        if target in self.files:
            try:
                os.link(source, target)
            except FileExistsError:
                return
            raise AssertionError(f"link onto existing {target} succeeded")
        os.link(source, target)
        self.files[target] = bytearray(self.files[source])
        self.meta[target] = dict(self.meta[source])

    @precondition(lambda self: self.files)
    @rule(data=st.data(), key=st.sampled_from(KEYS), value=st.sampled_from(VALUES))
    def set_xattr(self, data: st.DataObject, key: str, value: str) -> None:
        path = self._file(data)
        os.setxattr(path, f"user.casfs.{key}", value.encode())
        self.meta[path][key] = value

    # -- what must hold after every step ---------------------------------------------
    @invariant()
    def the_tree_matches_the_model(self) -> None:
        for directory in self.dirs:
            expected = sorted(p.name for p in self.files if p.parent == directory)
            assert sorted(os.listdir(directory)) == expected, directory
        for path, content in self.files.items():
            assert path.read_bytes() == bytes(content), path
            assert path.stat().st_size == len(content), path
            for key, value in self.meta[path].items():
                try:
                    seen: str | None = os.getxattr(path, f"user.casfs.{key}").decode()
                except OSError as e:
                    assert e.errno == errno.ENODATA
                    seen = None
                assert seen == value, (path, key)


@ALL_BACKENDS
def test_the_mount_behaves_like_the_model(mounter: Mounter) -> None:
    FileModel.mountpoint = mounter.mount()
    run_model(FileModel)


def test_a_bulk_load_behaves_like_the_model(mounter: Mounter) -> None:
    """The same steps where a close returns before its file is registered (a bulk
    load, on the embedded catalog it needs): every step after a close meets the
    registration under way."""
    FileModel.mountpoint = mounter.mount("durability=batch", "durability_interval=0.5")
    run_model(FileModel)


def run_model(model: type[FileModel]) -> None:
    run_state_machine_as_test(model, settings=settings(
        max_examples=int(os.environ.get("CASFS_STATEFUL_EXAMPLES", "40")),
        stateful_step_count=int(os.environ.get("CASFS_STATEFUL_STEPS", "25")),
        deadline=None, derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
