"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage),
with a bounded read cache on each host.

`s3://BUCKET/PREFIX`: a blob is the object `PREFIX/sha256/ab/cdef…`. It is staged and
hashed locally as with a blob directory, then uploaded so that the server checks
its SHA-256 in transit and creates it only if it is absent (`If-None-Match: *`: an
object that is there already is a dedup hit, never overwritten). Large blobs are
asked for first and uploaded in parts (a conditional put cannot be multipart; the
bytes under a content address are the same whoever writes them). The writer's own
host keeps what it wrote in its cache. Quarantined objects move to
`PREFIX/quarantine/`.

The endpoint and credentials come from the standard variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; an http:// endpoint works),
never from casfs's own files. Every request has a timeout and is retried with
backoff (throttling included) for at most as long again (CASFS_S3_TIMEOUT, 30 s by
default), so a store that is unreachable ends in an OSError within a bounded time.
obstore is the client; its errors become OSErrors here.
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import S3Store

from casfs.blobs import BlobStore, Hashed
from casfs.blobs.arrival import Arrival
from casfs.blobs.cache import ReadCache
from casfs.blobs.staging import CHUNK, Stager, StagingFile, is_sha256_hex, read_chunks
from casfs.errors import StoreError

if TYPE_CHECKING:
    from obstore.store import RetryConfig

MULTIPART_FROM = 16 << 20  # smaller blobs go up in one conditional PUT
PART = 8 << 20
RANGED_FROM = 32 << 20  # larger blobs come down in ranges, several at once (`_ranges`)
RANGE = 16 << 20
RANGES_AT_ONCE = 3  # asked for at a time: two arrive while the one before is handed on
REQUEST_TIMEOUT_S = 30.0  # CASFS_S3_TIMEOUT: one request, and all retries of one
CONNECT_TIMEOUT_S = 5.0
DEFAULT_CACHE = 10 << 30


class S3BlobStore:
    local = False

    def __init__(self, bucket: str, prefix: str, tmp_dir: Path, cache_dir: Path,
                 cache_size: int = DEFAULT_CACHE, *, endpoint: str | None = None,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL")
        config: dict[str, Any] = {"checksum_algorithm": "SHA256",
                                  "region": os.environ.get("AWS_REGION", "us-east-1")}
        for key, variable in (("access_key_id", "AWS_ACCESS_KEY_ID"),
                              ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                              ("session_token", "AWS_SESSION_TOKEN")):
            if os.environ.get(variable):
                config[key] = os.environ[variable]
        if endpoint:
            config["endpoint"] = endpoint
        self._store = S3Store(
            bucket, config=config,  # type: ignore[arg-type]
            client_options={"timeout": timedelta(seconds=timeout_s),
                            "connect_timeout": timedelta(seconds=min(CONNECT_TIMEOUT_S,
                                                                     timeout_s)),
                            "allow_http": bool(endpoint and endpoint.startswith("http://"))},
            retry_config=_retries(timeout_s))
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self._stager = Stager(tmp_dir)
        self.cache = ReadCache(cache_dir, cache_size)

    # -- names --------------------------------------------------------------------
    def key(self, sha256: str) -> str:
        if not is_sha256_hex(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return f"{self.prefix}/sha256/{sha256[:2]}/{sha256[2:]}".lstrip("/")

    def uri(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key(sha256)}"

    # -- writing ------------------------------------------------------------------
    def stage(self) -> StagingFile:
        return self._stager.stage()

    def place(self, staging: StagingFile, *, durable: bool = True) -> tuple[str, int, bool]:
        sha256 = staging.finish(fsync=False)  # durable once the server has it, always
        is_new = self._upload(staging, sha256)
        self.cache.add(sha256, staging)
        return sha256, staging.size, is_new

    def place_batch(self, stagings: list[StagingFile], *, durable: bool = True,
                    patient: bool = True, link_first: bool = False
                    ) -> list[tuple[str, int, bool]]:
        return [self.place(staging, durable=durable) for staging in stagings]

    def sync(self) -> None:
        """Nothing to do: an object is durable once its PUT returned."""

    def restore(self, staging: StagingFile, sha256: str) -> None:
        self._upload(staging, sha256)

    def _upload(self, staging: StagingFile, sha256: str) -> bool:
        key = self.key(sha256)
        try:
            if staging.size < MULTIPART_FROM:
                obstore.put(self._store, key, os.pread(staging.fd, staging.size, 0),
                            mode="create")
                return True
            if self.has(sha256):
                return False
            obstore.put(self._store, key, read_chunks(staging.fd, staging.size, PART),
                        use_multipart=True, chunk_size=PART)
            return True
        except AlreadyExistsError:
            return False
        except Exception as e:  # obstore's errors: one OSError for the callers
            raise _os_error("storing", key, e) from e

    # -- reading ------------------------------------------------------------------
    def has(self, sha256: str) -> bool:
        try:
            obstore.head(self._store, self.key(sha256))
            return True
        except FileNotFoundError:
            return False
        except Exception as e:
            raise _os_error("asking for", self.key(sha256), e) from e

    def open_blob(self, sha256: str) -> int:
        return self.cache.open(sha256, lambda: self._fetch(sha256))

    def open_blob_early(self, sha256: str, size: int) -> tuple[int, Arrival | None]:
        return self.cache.open_early(sha256, size, lambda: self._fetch(sha256, size))

    def _fetch(self, sha256: str, size: int | None = None) -> Iterator[memoryview]:
        """The blob's bytes, in order: one GET, or for a large blob whose size is
        known, ranges of it several at a time (`_ranges`). Every download starts here."""
        if size is not None and size >= RANGED_FROM:
            return self._ranges(sha256, size)
        return self._stream(sha256)

    def _ranges(self, sha256: str, size: int) -> Iterator[memoryview]:
        """A large blob as RANGE-byte GETs, RANGES_AT_ONCE of them asked for at a time,
        handed on in order in CHUNK slices. A fill holds up to five ranges in memory
        (80 MiB): those asked for, the one it hands on, and the one before, whose last
        bytes its readers may still take (`Arrival.held`).

        One GET of a large object is served by the S3 server one piece after another,
        and on a machine with few cores its cold read then waits on the server as much
        as on its own work. Several ranges at once keep the server busy while this
        host hashes and writes: `contrib/bench/s3.py`, README "Blobs in S3-compatible
        storage". Each range runs in a daemon thread of its own with the store's
        request timeout, so a fill that stops early (a wrong byte, a failed range)
        leaves nothing that outlives that bound, and nothing that delays an exit."""
        key = self.key(sha256)
        parts = [(start, min(start + RANGE, size)) for start in range(0, size, RANGE)]
        pending: collections.deque[Future[memoryview]] = collections.deque()
        for number in range(len(parts)):
            while len(pending) < RANGES_AT_ONCE and number + len(pending) < len(parts):
                pending.append(self._start_range(key, *parts[number + len(pending)]))
            part = pending.popleft().result()
            if len(part) != parts[number][1] - parts[number][0]:
                raise OSError(f"object store: reading {key} failed: range "
                              f"{parts[number][0]}-{parts[number][1]} came back "
                              f"{len(part)} bytes long (the object changed size?)")
            for start in range(0, len(part), CHUNK):
                yield part[start:start + CHUNK]

    def _start_range(self, key: str, start: int, end: int) -> Future[memoryview]:
        future: Future[memoryview] = Future()

        def run() -> None:
            try:
                future.set_result(memoryview(obstore.get_range(self._store, key, start=start,
                                                               end=end)))
            except FileNotFoundError as e:
                future.set_exception(e)
            except Exception as e:
                future.set_exception(_os_error("reading", key, e))

        threading.Thread(target=run, name="casfs-range", daemon=True).start()
        return future

    def _stream(self, sha256: str) -> Iterator[memoryview]:
        key = self.key(sha256)
        try:
            for chunk in obstore.get(self._store, key).stream(min_chunk_size=CHUNK):
                yield memoryview(chunk)  # the client's own buffer: a copy of a cold GiB saved
        except FileNotFoundError:
            raise
        except Exception as e:
            raise _os_error("reading", key, e) from e

    def hash_blob(self, sha256: str) -> Hashed:
        key = self.key(sha256)
        try:
            result = obstore.get(self._store, key)
            digest, size = hashlib.sha256(), 0
            for chunk in result.stream(min_chunk_size=CHUNK):
                digest.update(chunk)
                size += len(chunk)
        except FileNotFoundError:
            return Hashed(sha256, None, 0, None)
        except Exception as e:
            raise _os_error("reading", key, e) from e
        return Hashed(sha256, digest.hexdigest(), size, str(result.meta.get("e_tag")))

    # -- removing -----------------------------------------------------------------
    def delete(self, sha256: str) -> None:
        key = self.key(sha256)
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            pass
        except Exception as e:
            raise _os_error("deleting", key, e) from e
        self.cache.drop(sha256)

    def quarantine(self, sha256: str, seen: Hashed) -> str | None:
        key = self.key(sha256)
        try:
            meta = obstore.head(self._store, key)
        except FileNotFoundError:
            return None
        if str(meta.get("e_tag")) != seen.version:
            return None
        target = f"{self.prefix}/quarantine/{sha256}.{meta['last_modified'].timestamp():.0f}"
        target = target.lstrip("/")
        try:
            obstore.copy(self._store, key, target)
            obstore.delete(self._store, key)
        except Exception as e:
            raise _os_error("quarantining", key, e) from e
        self.cache.drop(sha256)
        return f"s3://{self.bucket}/{target}"

    def list_blobs(self) -> Iterator[tuple[str, int, float]]:
        """(sha256, size, last modified) of every object under PREFIX/sha256/; stops
        with an OSError on any listing error (a failed listing is never "empty")."""
        root = f"{self.prefix}/sha256/".lstrip("/")
        try:
            for batch in obstore.list(self._store, prefix=root):
                for meta in batch:
                    name = meta["path"][len(root):].replace("/", "")
                    if is_sha256_hex(name):
                        yield name, int(meta["size"]), meta["last_modified"].timestamp()
        except Exception as e:
            raise _os_error("listing", root, e) from e


def _retries(deadline_s: float) -> RetryConfig:
    return {"max_retries": 5, "retry_timeout": timedelta(seconds=deadline_s),
            "backoff": {"init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=5), "base": 2}}


def _os_error(doing: str, key: str, error: Exception) -> OSError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return OSError(f"object store: {doing} {key} failed: {first}")


def from_url(bucket: str, prefix: str, store_root: Path) -> S3BlobStore:
    if not bucket:
        raise StoreError("an s3:// URL needs a bucket: s3://BUCKET/PREFIX")
    try:
        size = int(os.environ.get("CASFS_CACHE_SIZE", DEFAULT_CACHE))
        timeout = float(os.environ.get("CASFS_S3_TIMEOUT", REQUEST_TIMEOUT_S))
    except ValueError as e:
        raise StoreError(f"CASFS_CACHE_SIZE (bytes) or CASFS_S3_TIMEOUT (seconds): {e}") \
            from None
    return S3BlobStore(bucket, prefix, store_root / "tmp", store_root / "cache", size,
                       timeout_s=timeout)


def _implements_the_protocol(store: S3BlobStore) -> BlobStore:
    return store  # mypy checks here that S3BlobStore is a BlobStore
