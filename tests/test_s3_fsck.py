"""fsck on a store whose blobs are in S3: the bucket compared with the blob ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from casfs import fsck, gc
from casfs.records import GcPolicy
from casfs.store import Store


@pytest.mark.parametrize("backend", ["postgresql+s3"], indirect=True)
def test_an_object_that_was_never_registered_is_found_and_adopted(
        store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adopted into the ledger, an object no record uses is garbage: gc removes it once
    its grace period is over."""
    monkeypatch.setattr(fsck, "STRAY_GRACE", 0.0)
    with Store.open(store_path) as store:
        staging = store.blobs.stage()
        try:
            staging.write(b"uploaded, then the writer died", 0)
            sha, _, _ = store.blobs.place(staging)  # never registered
        finally:
            staging.discard()
        problems = fsck.fsck(store)
        assert [(p.kind, p.sha256) for p in problems] == [("stray-object", sha)]
        assert problems[0].path == store.blobs.uri(sha)
        assert fsck.repair(store, problems[0])
        assert store.catalog.blob_state(sha) == "present"
        assert fsck.fsck(store) == []
        assert [g.sha256 for page in gc.find_garbage(store, GcPolicy(0, 0, ()))
                for g in page] == [sha]
