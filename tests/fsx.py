"""A file-system exerciser: random operations on one file against an in-memory model.

Writes at random offsets (also through a second, write-only descriptor, which the
mount serves without the page cache), truncates up and down, reads, mapped writes
with msync, mapped reads, fsync, dropping the page cache, close and reopen; every read and
every size is checked against the model, and the first difference stops the run
with the operations that led to it. Seeded, so a failure reruns the same way.

    python -m tests.fsx FILE [--ops N] [--seed S] [--no-mmap] [--max-len BYTES]

The test suite runs it on a real mount (tests/test_fsx.py); CASFS_FSX_OPS sets
how many operations each run does there.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

PAGE = mmap.PAGESIZE


class BadData(AssertionError):
    pass


@dataclass
class Exerciser:
    path: Path
    seed: int
    use_mmap: bool = True
    max_len: int = 256 * 1024
    model: bytearray = field(default_factory=bytearray)
    fd: int = -1
    write_only_fd: int = -1
    done: int = 0
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=30))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- the operations --------------------------------------------------------------
    def open(self, truncate: bool = False) -> None:
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self.fd = os.open(self.path, flags, 0o644)
        if truncate:
            self.model.clear()

    def close(self) -> None:
        self.close_write_only()
        os.close(self.fd)
        self.fd = -1

    def close_write_only(self) -> str:
        if self.write_only_fd >= 0:
            os.close(self.write_only_fd)
            self.write_only_fd = -1
        return "close write-only"

    def _span(self, limit: int) -> tuple[int, int]:
        offset = self.rng.randrange(0, max(1, limit))
        size = self.rng.choice([1, 7, 100, 4096, 5000, 65536, 100_000])
        return offset, max(1, min(size, self.max_len - offset))

    def write(self) -> str:
        offset, size = self._span(self.max_len - 1)
        data = self.rng.randbytes(size)
        assert os.pwrite(self.fd, data, offset) == size
        self._model_write(offset, data)
        return f"write {offset}+{size}"

    def write_only(self) -> str:
        """A write through another descriptor, opened O_WRONLY (`cp`, `>>` do that)."""
        if self.write_only_fd < 0:
            self.write_only_fd = os.open(self.path, os.O_WRONLY)
        offset, size = self._span(self.max_len - 1)
        data = self.rng.randbytes(size)
        assert os.pwrite(self.write_only_fd, data, offset) == size
        self._model_write(offset, data)
        return f"write-only {offset}+{size}"

    def _model_write(self, offset: int, data: bytes) -> None:
        if offset > len(self.model):
            self.model.extend(bytes(offset - len(self.model)))
        self.model[offset:offset + len(data)] = data

    def read(self) -> str:
        offset, size = self._span(len(self.model) + 10)
        got = os.pread(self.fd, size, offset)
        self._check(got, offset, size, "read")
        return f"read {offset}+{size}"

    def truncate(self) -> str:
        size = self.rng.randrange(0, self.max_len)
        os.ftruncate(self.fd, size)
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))
        return f"truncate {size}"

    def map_write(self) -> str:
        offset, size = self._span(self.max_len - 1)
        end = offset + size
        if end > len(self.model):  # a mapping cannot grow the file: extend it first
            os.ftruncate(self.fd, end)
            self.model.extend(bytes(end - len(self.model)))
        start = offset - offset % PAGE
        data = self.rng.randbytes(size)
        with mmap.mmap(self.fd, end - start, offset=start) as mapped:
            mapped[offset - start:end - start] = data
            mapped.flush()  # msync
        self._model_write(offset, data)
        return f"map_write {offset}+{size}"

    def map_read(self) -> str:
        if not self.model:
            return "map_read (empty)"
        offset, size = self._span(len(self.model))
        size = min(size, len(self.model) - offset)
        start = offset - offset % PAGE
        with mmap.mmap(self.fd, offset + size - start, offset=start,
                       access=mmap.ACCESS_READ) as mapped:
            got = mapped[offset - start:offset + size - start]
        self._check(got, offset, size, "map_read")
        return f"map_read {offset}+{size}"

    def fsync(self) -> str:
        os.fsync(self.fd)
        return "fsync"

    def drop_cache(self) -> str:
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return "drop_cache"

    def reopen(self) -> str:
        self.close()
        self.open()
        return "close+open"

    # -- checking ----------------------------------------------------------------
    def _check(self, got: bytes, offset: int, size: int, what: str) -> None:
        expected = bytes(self.model[offset:offset + size])
        if got != expected:
            first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False))
                          if a != b), min(len(got), len(expected)))
            raise BadData(f"{what} {offset}+{size} BAD DATA at byte {offset + first}: got "
                          f"{len(got)} bytes, expected {len(expected)} (seed {self.seed}, "
                          f"op {self.done}); last operations: {list(self.recent)}")

    def check_size(self) -> None:
        size = os.fstat(self.fd).st_size
        if size != len(self.model):
            raise BadData(f"size {size}, expected {len(self.model)} (seed {self.seed}, op "
                          f"{self.done}); last operations: {list(self.recent)}")

    def run(self, ops: int) -> bytes:
        """Do `ops` operations; returns the bytes the file must hold."""
        choices = [(self.write, 25), (self.read, 25), (self.truncate, 6), (self.fsync, 8),
                   (self.drop_cache, 6), (self.reopen, 4), (self.write_only, 8),
                   (self.close_write_only, 3)]
        if self.use_mmap:
            choices += [(self.map_write, 12), (self.map_read, 12)]
        operations = [op for op, _ in choices]
        weights = [w for _, w in choices]
        self.open(truncate=True)
        try:
            for self.done in range(ops):
                operation = self.rng.choices(operations, weights)[0]
                self.recent.append(operation())
                self.check_size()
        finally:
            self.close()
        return bytes(self.model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-mmap", action="store_true")
    parser.add_argument("--max-len", type=int, default=256 * 1024)
    args = parser.parse_args()
    exerciser = Exerciser(args.file, args.seed, not args.no_mmap, args.max_len)
    try:
        expected = exerciser.run(args.ops)
    except BadData as e:
        print(e, file=sys.stderr)
        return 1
    if args.file.read_bytes() != expected:
        print("the file differs from the model after close", file=sys.stderr)
        return 1
    print(f"{args.ops} operations, seed {args.seed}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
