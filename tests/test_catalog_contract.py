"""The catalog's laws, one suite for every backend: keys, paths, history,
directories, inode numbers, the blob ledger, counters and reports.

Every test here runs on SQLite and on PostgreSQL (BOTH_CATALOGS); what only one
backend has (SQLite's schema versions, its backup) has a file of its own.
"""

import time
from pathlib import Path

import pytest

from casfs.catalog import ROOT_INO, Catalog
from casfs.errors import BlobsMissing, CatalogError, Conflict, StoreError, UniqueViolation
from casfs.ingest import ingest_file, place_blob, register_placed
from casfs.records import Directory, Document, NewDocument, PathWrite, Variant
from casfs.store import Store

from .conftest import BOTH_CATALOGS

pytestmark = BOTH_CATALOGS

SHA_A = "a" * 64
SHA_B = "b" * 64


def new(**fields: object) -> NewDocument:
    base: dict[str, object] = {"resolver": "unpaywall", "artifact_id": "W1",
                               "basename": "a.pdf", "sha256": SHA_A, "bytes": 10,
                               "storage_uri": "file:///x", "source_url": "https://x/a.pdf"}
    base.update(fields)
    return NewDocument(**base)  # type: ignore[arg-type]


def test_registration_is_idempotent_on_the_key(store: Store) -> None:
    first, outcome = store.catalog.register(new())
    again, outcome_again = store.catalog.register(new())
    assert (outcome, outcome_again) == ("added", "unchanged")
    assert again.id == first.id
    assert store.catalog.stats()["documents"] == 1


def test_new_bytes_for_a_key_make_a_new_version_at_the_same_path(store: Store) -> None:
    first, _ = store.catalog.register(new())
    second, outcome = store.catalog.register(new(sha256=SHA_B, bytes=20))
    assert outcome == "updated"
    assert (second.ino, second.basename) == (first.ino, first.basename)
    history = store.catalog.history(first.ino)
    assert [d.sha256 for d in history] == [SHA_A, SHA_B]
    assert history[0].valid_to is not None and history[0].change == "overwrite"
    assert history[1].valid_to is None


def test_a_name_collision_gets_a_deterministic_name_and_overwrites_nothing(store: Store) -> None:
    a, _ = store.catalog.register(new())
    b, _ = store.catalog.register(new(source_url="https://y/a.pdf", sha256=SHA_B))
    assert a.basename == "a.pdf"
    assert b.basename.startswith("a~") and b.basename.endswith(".pdf")
    other = Store.init(store.layout.root.parent / "other")
    try:
        other.catalog.register(new())
        again, _ = other.catalog.register(new(source_url="https://y/a.pdf", sha256=SHA_B))
        assert again.basename == b.basename
    finally:
        other.close()
    assert store.catalog.get_document(a.ino).sha256 == SHA_A  # type: ignore[union-attr]


def test_the_live_path_and_key_are_unique_in_the_schema(store: Store) -> None:
    store.catalog.register(new())
    with pytest.raises(UniqueViolation):
        store.catalog.db.execute(
            "INSERT INTO documents (ino, artifact_id, resolver, source_url, basename, bytes, "
            "sha256, storage_uri, created_at, updated_at, mtime_ns, valid_from) VALUES "
            "(999, 'W1', 'unpaywall', 'https://other', 'a.pdf', 1, ?, 'u', 0, 0, 0, 0)",
            (SHA_A,))


def test_rename_unlink_and_link_keep_history(store: Store) -> None:
    doc, _ = store.catalog.register(new())
    target = store.catalog.ensure_directory("arxiv", "W2")
    moved = store.catalog.rename_document(doc.ino, target, "b.pdf", replace=False)
    assert (moved.ino, moved.resolver, moved.artifact_id) == (doc.ino, "arxiv", "W2")
    linked = store.catalog.link_document(doc.ino, target, "c.pdf")
    assert linked.ino != doc.ino and linked.sha256 == doc.sha256
    assert linked.source_url is None  # the key stays unique
    store.catalog.unlink_document(doc.ino)
    assert store.catalog.get_document(doc.ino) is None
    assert [d.change for d in store.catalog.history(doc.ino)] == ["rename", "unlink"]
    assert store.catalog.blob_refcount(SHA_A) == 1


def test_rename_onto_a_live_path_needs_replace(store: Store) -> None:
    a, _ = store.catalog.register(new())
    b, _ = store.catalog.register(new(basename="b.pdf", source_url="https://x/b.pdf"))
    directory = store.catalog.directory_of(a)
    with pytest.raises(Conflict):
        store.catalog.rename_document(b.ino, directory, "a.pdf", replace=False)
    store.catalog.rename_document(b.ino, directory, "a.pdf", replace=True)
    assert store.catalog.lookup_document(directory, "a.pdf").ino == b.ino  # type: ignore[union-attr]
    assert store.catalog.history(a.ino)[-1].change == "replaced"


def test_renaming_an_artifact_directory_moves_its_documents(store: Store) -> None:
    doc, _ = store.catalog.register(new())
    directory = store.catalog.directory_of(doc)
    store.catalog.rename_directory(directory.ino, directory.parent_ino, "10.1%2Fx")
    moved = store.catalog.get_document(doc.ino)
    assert moved is not None and moved.artifact_id == "10.1/x"
    assert store.catalog.virtual_path(moved) == "/unpaywall/10.1%2Fx/a.pdf"


def test_directories_made_empty_persist_and_remove_only_when_empty(store: Store) -> None:
    resolver = store.catalog.make_directory(1, "crossref")
    artifact = store.catalog.make_directory(resolver.ino, "W9")
    assert artifact.resolver == "crossref" and artifact.artifact_id == "W9"
    with pytest.raises(Conflict):
        store.catalog.remove_directory(resolver.ino)
    store.catalog.remove_directory(artifact.ino)
    store.catalog.remove_directory(resolver.ino)
    assert store.catalog.lookup_directory(1, "crossref") is None


def test_readdir_pages_cover_every_entry_once(store: Store) -> None:
    for i in range(25):
        store.catalog.register(new(basename=f"f{i}.pdf", source_url=f"https://x/{i}"))
    directory = store.catalog.ensure_directory("unpaywall", "W1")
    seen, after = [], 0
    while page := store.catalog.list_documents(directory, after, 7):
        seen += [d.basename for d in page]
        after = page[-1].ino
    assert sorted(seen) == sorted(f"f{i}.pdf" for i in range(25))


def test_variants_are_kept_per_document(store: Store) -> None:
    doc, _ = store.catalog.register(new())
    store.catalog.add_variant(Variant(doc.id, "html", "file:///h", 5, "text/html", SHA_B))
    assert [v.variant for v in store.catalog.variants(doc.id)] == ["html"]


def test_records_are_pointed_at_the_place_their_blobs_moved_to(store: Store) -> None:
    """After `migrate --blobs`: every version and variant names its object."""
    doc, _ = store.catalog.register(new())
    store.catalog.register(new(sha256=SHA_B))  # a second version: the first is history
    store.catalog.add_variant(Variant(doc.id, "html", "file:///h", 5, "text/html", SHA_B))
    assert store.catalog.point_records_at("s3://bucket/p/sha256/") == 2
    assert {d.storage_uri for d in store.catalog.history(doc.ino)} == {
        f"s3://bucket/p/sha256/{sha[:2]}/{sha[2:]}" for sha in (SHA_A, SHA_B)}
    assert [v.storage_uri for v in store.catalog.variants(doc.id)] == [
        f"s3://bucket/p/sha256/bb/{SHA_B[2:]}"]


def test_ingest_file_stores_once_and_counts_dedup_hits(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "paper.pdf"
    source.write_bytes(b"%PDF-1.7 ...")
    first = ingest_file(store, source, resolver="unpaywall", artifact_id="W1",
                        source_url="https://x/paper.pdf")
    second = ingest_file(store, source, resolver="crossref", artifact_id="W1",
                         source_url="https://y/paper")
    assert not first.dedup_hit and second.dedup_hit
    assert first.document.content_type == "application/pdf"
    stats = store.catalog.stats()
    assert (stats["documents"], stats["blobs"], stats["dedup_hits"]) == (2, 1, 1)
    assert stats["logical_bytes"] == 2 * stats["physical_bytes"]


def test_allocated_inodes_never_collide_across_connections(store: Store) -> None:
    other = store.open_catalog()
    try:
        mine = set(store.catalog.reserve_inos()) | set(store.catalog.reserve_inos())
        theirs = set(other.reserve_inos()) | set(other.reserve_inos())
        doc, _ = store.catalog.register(new())
        directory = store.catalog.ensure_directory("x", "y")
    finally:
        other.close()
    assert len(mine) == len(theirs) == 512 and not mine & theirs
    assert doc.ino not in mine | theirs and directory.ino not in mine | theirs


def test_a_registration_refuses_a_blob_that_is_gone(store: Store) -> None:
    with pytest.raises(BlobsMissing) as info:
        store.catalog.register(new(), present=lambda sha: False)
    assert info.value.sha256s == [SHA_A]
    assert store.catalog.stats()["documents"] == 0


def test_a_batch_with_one_blob_gone_registers_none_of_it(store: Store) -> None:
    """Law 2 for register_many: `present` is asked for every blob of the batch, and
    one that is gone leaves nothing of the batch behind (no document, no directory,
    no counter), plain cases included."""
    batch = [new(artifact_id="W1"), new(artifact_id="W2", sha256=SHA_B,
                                        source_url="https://x/b.pdf")]
    asked: list[str] = []

    def present(sha256: str) -> bool:
        asked.append(sha256)
        return sha256 != SHA_B
    with pytest.raises(BlobsMissing) as info:
        store.catalog.register_many(batch, present)
    assert info.value.sha256s == [SHA_B]
    assert sorted(asked) == [SHA_A, SHA_B]
    assert store.catalog.stats()["documents"] == 0
    assert store.catalog.find_directory("unpaywall", "W1") is None
    assert not [c for c in store.catalog.counters() if c[0] == "casfs_ingested_files_total"]


def test_registration_restores_a_blob_removed_before_its_transaction(store: Store) -> None:
    staging = store.blobs.stage()
    staging.write(b"precious bytes", 0)
    blob = place_blob(store.blobs, staging)
    store.blobs.delete(blob.sha256)  # a gc got there between place and register
    try:
        doc, outcome = register_placed(
            store.blobs, {blob.sha256: staging},
            lambda present: store.catalog.register(
                new(sha256=blob.sha256, bytes=blob.bytes, storage_uri=blob.storage_uri),
                present))
    finally:
        staging.discard()
    assert outcome == "added"
    assert store.blobs.path(doc.sha256).read_bytes() == b"precious bytes"


def test_ingest_counters_move(store: Store) -> None:
    store.catalog.register(new(dedup_hit=True))
    counters = {(n, labels): v for n, labels, v in store.catalog.counters()}
    assert counters[("casfs_dedup_hits_total", 'resolver="unpaywall"')] == 1
    assert counters[("casfs_ingested_bytes_total", 'resolver="unpaywall"')] == 10


def test_inodes_reserved_in_a_rolled_back_transaction_are_not_handed_out(store: Store) -> None:
    with pytest.raises(CatalogError):  # fails after reserving a block of inodes
        store.catalog.register(new(basename=None))
    assert store.catalog.stats()["documents"] == 0
    other = store.open_catalog()
    try:
        theirs = set(other.reserve_inos()) | set(other.reserve_inos())
    finally:
        other.close()
    doc, _ = store.catalog.register(new())
    assert doc.ino not in theirs
    assert store.catalog.directory_of(doc).ino not in theirs


def test_a_second_host_joins_the_store_and_sees_its_records(store: Store, tmp_path: Path,
                                                             catalog_url: str | None) -> None:
    """`casfs --store DIR init --catalog URL --blobs file:///SHARED`: another store
    directory on the same catalog and blob directory is the same store."""
    if catalog_url is None:
        pytest.skip("an embedded catalog belongs to one store directory")
    doc, _ = store.catalog.register(new())
    blobs = f"file://{store.layout.root}"
    other = Store.init(tmp_path / "host-b", catalog=catalog_url, blobs=blobs)
    try:
        assert other.catalog.get_document(doc.ino) == doc
        assert other.blobs.cas_dir == store.blobs.cas_dir
        assert "password" not in (tmp_path / "host-b" / "store.toml").read_text()
    finally:
        other.close()
    with pytest.raises(StoreError):
        Store.init(tmp_path / "host-c", catalog=catalog_url.replace("casfs@", "casfs:pw@"))


def test_writes_at_paths_commit_as_one(store: Store) -> None:
    """Group commit: every write of the call is visible after it, with its counters
    and its announced changes, and none of them before it ends."""
    catalog, other = store.catalog, store.open_catalog()
    directory = catalog.ensure_directory("unpaywall", "W1")
    catalog.drain_changes()
    inos = [catalog.reserve_inos().start, catalog.reserve_inos().start]
    seen_inside: list[object] = []

    def present(sha256: str) -> bool:  # asked inside the transaction
        seen_inside.append(other.lookup_document(directory, f"{inos[0]}.pdf"))
        return True

    try:
        written = catalog.write_at_paths(
            [PathWrite(ino, directory, f"{ino}.pdf", new(sha256=sha, basename=None,
                                                          source_url=None))
             for ino, sha in zip(inos, [SHA_A, SHA_B], strict=True)], present)
        assert seen_inside and seen_inside == [None] * len(seen_inside)
        assert [other.lookup_document(directory, d.basename) for d in written] == written
    finally:
        other.close()
    counters = {(n, labels): v for n, labels, v in catalog.counters()}
    assert counters[("casfs_ingested_files_total", 'resolver="unpaywall"')] == 2
    assert {c.ino for c in catalog.drain_changes() or []} >= set(inos)


def test_writes_at_paths_of_nothing_changes_nothing(store: Store) -> None:
    assert store.catalog.write_at_paths([]) == []
    assert store.catalog.stats()["documents"] == 0


def test_a_failure_in_writes_at_paths_commits_none_of_them(store: Store) -> None:
    catalog = store.catalog
    directory = catalog.ensure_directory("unpaywall", "W1")
    first, _ = catalog.register(new(basename="taken.pdf"))
    inos = [catalog.reserve_inos().start, catalog.reserve_inos().start]
    writes = [PathWrite(inos[0], directory, "fresh.pdf", new(basename=None, source_url=None)),
              PathWrite(inos[1], directory, "gone.pdf", new(sha256=SHA_B, basename=None,
                                                             source_url=None))]
    with pytest.raises(BlobsMissing) as raised:
        catalog.write_at_paths(writes, lambda sha256: sha256 != SHA_B)
    assert raised.value.sha256s == [SHA_B]
    assert catalog.lookup_document(directory, "fresh.pdf") is None
    assert catalog.stats()["documents"] == 1
    counters = {(n, labels): v for n, labels, v in catalog.counters()}
    assert counters[("casfs_ingested_files_total", 'resolver="unpaywall"')] == 1
    # the connection is usable afterwards
    catalog.write_at_paths(writes)
    assert catalog.lookup_document(directory, "fresh.pdf") is not None
    assert catalog.get_document(first.ino) == first


def test_writes_at_paths_in_one_call_end_as_one_call_each(store: Store) -> None:
    """A round of writes that meet each other and the tree (overwrites, a replaced
    occupant, one inode or one path twice, a superseded version) leaves the same
    tree and history as the same writes made one call each, in order."""
    c = store.catalog

    def script(artifact: str) -> tuple[Directory, list[PathWrite]]:
        d = c.ensure_directory("unpaywall", artifact)
        first = new(artifact_id=artifact, basename=None, source_url=None)
        kept = c.write_at_paths([PathWrite(c.reserve_inos().start, d, "kept.pdf", first)])[0]
        held = c.write_at_paths([PathWrite(c.reserve_inos().start, d, "held.pdf", first)])[0]
        a, b, e = (c.reserve_inos().start for _ in range(3))

        def w(ino: int, name: str, sha: str, supersede: int | None = None) -> PathWrite:
            return PathWrite(ino, d, name, new(artifact_id=artifact, basename=None,
                                                source_url=None, sha256=sha), supersede)
        return d, [w(a, "new.pdf", SHA_A), w(kept.ino, "kept.pdf", SHA_B),
                   w(b, "held.pdf", SHA_B), w(a, "new.pdf", SHA_B),
                   w(e, "twice.pdf", SHA_A), w(b, "twice.pdf", SHA_B),
                   w(held.ino, "moved.pdf", "c" * 64, supersede=held.id)]

    together_dir, writes = script("W1")
    one_by_one_dir, each = script("W2")
    together = c.write_at_paths(writes)
    one_by_one = [c.write_at_paths([w])[0] for w in each]
    assert [d.basename for d in together] == [d.basename for d in one_by_one]
    assert [d.sha256 for d in together] == [d.sha256 for d in one_by_one]

    def shape(directory: Directory) -> list[tuple[str, str, list[tuple[str, str | None]]]]:
        return sorted((d.basename, d.sha256, [(v.sha256, v.change) for v in c.history(d.ino)])
                      for d in c.list_documents(directory, 0, 100))
    assert shape(together_dir) == shape(one_by_one_dir)
    assert [name for name, _, _ in shape(together_dir)] == [
        "kept.pdf", "moved.pdf", "new.pdf", "twice.pdf"]


def test_a_batch_registered_in_one_call_ends_as_one_call_each(store: Store) -> None:
    """register_many inserts the plain cases of a batch at once and the rest one by
    one: the outcomes, names, directories, history and counters must be those of the
    same documents registered one call each, in order (an import's batches)."""
    c = store.catalog
    sha_c, sha_d = "c" * 64, "d" * 64

    def script(resolver: str) -> list[NewDocument]:
        def doc(artifact: str, name: str, url: str | None, sha: str = SHA_A) -> NewDocument:
            return new(resolver=resolver, artifact_id=artifact, basename=name,
                       source_url=url, sha256=sha)
        c.register(doc("W1", "a.pdf", "u1"))
        c.register(doc("W1", "taken.pdf", "u2"))
        made = c.ensure_directory(resolver, "X")  # renamed: now W5's, and empty
        c.rename_directory(made.ino, made.parent_ino, "W5")
        return [doc("W1", "a.pdf", "u1"),  # unchanged
                doc("W1", "b.pdf", "u3", SHA_B),  # new
                doc("W1", "taken.pdf", "u4", SHA_B),  # a path taken: collision name
                doc("W2", "c.pdf", "u5"), doc("W2", "c.pdf", "u5", SHA_B),  # a key twice
                doc("W3", "d.pdf", "u6"), doc("W3", "d.pdf", "u7", sha_c),  # a path twice
                doc("W1", "a.pdf", "u1", SHA_B),  # a live key, new bytes
                doc("W4", "e.pdf", None, sha_d),  # no key
                doc("W5", "f.pdf", "u8"),  # into a directory made before
                doc("W6", "g.pdf", "u9", sha_c), doc("W6", "h.pdf", "u10", sha_c)]

    together = c.register_many(script("unpaywall"))
    one_by_one = [c.register(d) for d in script("crossref")]
    assert [(d.basename, d.sha256, o) for d, o in together] == \
        [(d.basename, d.sha256, o) for d, o in one_by_one]
    assert [o for _, o in together] == ["unchanged", "added", "added", "added", "updated",
                                        "added", "added", "updated", "added", "added",
                                        "added", "added"]

    def shape(resolver: str) -> list[tuple[str, str | None, list[object]]]:
        top = c.find_directory(resolver, None)
        assert top is not None
        return sorted((d.name, d.artifact_id, sorted(
            (doc.basename, [(v.sha256, v.change) for v in c.history(doc.ino)])
            for doc in c.list_documents(d, 0, 100)))
            for d in c.list_directories(top.ino, 0, 100))
    assert shape("unpaywall") == shape("crossref")
    assert [(name, artifact) for name, artifact, _ in shape("unpaywall")] == [
        (f"W{i}", f"W{i}") for i in range(1, 7)]
    counters = {(n, labels): v for n, labels, v in c.counters()}
    for name in ("casfs_ingested_files_total", "casfs_ingested_bytes_total"):
        assert counters[(name, 'resolver="unpaywall"')] == \
            counters[(name, 'resolver="crossref"')] > 0


def test_writes_at_paths_ask_present_for_every_blob_before_they_commit(store: Store) -> None:
    """`present` is the mount's last word before a round commits: a mount on a
    catalog server places a round's blobs while the statement runs, and waits for
    them inside `present` (mount/catalog_writer.py), so it must be asked for every
    blob of the call, whatever the writes meet, and before anything is visible."""
    c, other = store.catalog, store.open_catalog()
    d = c.ensure_directory("unpaywall", "W1")
    first = new(basename=None, source_url=None)
    kept = c.write_at_paths([PathWrite(c.reserve_inos().start, d, "kept.pdf", first)])[0]
    a, b = c.reserve_inos().start, c.reserve_inos().start

    def w(ino: int, name: str, sha: str) -> PathWrite:
        return PathWrite(ino, d, name, new(basename=None, source_url=None, sha256=sha))
    rounds = [[w(a, "new.pdf", SHA_A)],  # a new name alone
              [w(kept.ino, "kept.pdf", "c" * 64)],  # a live document overwritten
              [w(b, "x.pdf", "d" * 64), w(b, "x.pdf", "e" * 64)],  # one inode twice
              [w(c.reserve_inos().start, "y.pdf", "f" * 64),  # a mix of both
               w(kept.ino, "kept.pdf", SHA_B)]]
    try:
        for writes in rounds:
            names = [x.basename for x in writes]
            before = [other.lookup_document(d, n) for n in names]
            asked: dict[str, list[Document | None]] = {}
            c.write_at_paths(writes, lambda sha256, seen=asked, names=names: bool(
                seen.setdefault(sha256, [other.lookup_document(d, n) for n in names])))
            assert set(asked) == {x.new.sha256 for x in writes}
            assert all(seen == before for seen in asked.values())
    finally:
        other.close()


def _tree(catalog: Catalog) -> dict[str, str | None]:
    """Every directory (None) and document (its hash) by path, walked by the mount's
    own queries: lookups by name, listings and inodes."""
    tree: dict[str, str | None] = {}
    for resolver in catalog.list_directories(ROOT_INO, 0, 1000):
        tree[f"/{resolver.name}"] = None
        assert catalog.lookup_directory(ROOT_INO, resolver.name) == resolver
        for artifact in catalog.list_directories(resolver.ino, 0, 1000):
            tree[f"/{resolver.name}/{artifact.name}"] = None
            assert catalog.get_directory(artifact.ino) == artifact
            for doc in catalog.list_documents(artifact, 0, 1000):
                tree[f"/{resolver.name}/{artifact.name}/{doc.basename}"] = doc.sha256
                assert catalog.lookup_document(artifact, doc.basename) == doc
                assert catalog.get_document(doc.ino) == doc
    return tree


def test_a_view_of_a_past_moment_is_the_tree_as_it_was_then(store: Store) -> None:
    """A scripted history; after each step the live tree is noted with the time. A
    view of each of those times shows exactly the tree noted then."""
    c = store.catalog
    moments: list[tuple[float, dict[str, str | None]]] = []

    def note() -> None:
        time.sleep(0.002)
        moments.append((time.time(), _tree(c)))
        time.sleep(0.002)

    note()  # empty
    w1 = c.ensure_directory("unpaywall", "W1")
    note()
    doc, _ = c.register(new(basename="a.pdf", sha256=SHA_A))
    note()
    c.write_at_paths([PathWrite(doc.ino, w1, "a.pdf", new(sha256=SHA_B, basename=None))])
    note()
    c.rename_document(doc.ino, w1, "b.pdf", replace=False)
    note()
    c.rename_directory(w1.ino, w1.parent_ino, "W2")  # the documents follow
    note()
    w2 = c.find_directory("unpaywall", "W2")
    assert w2 is not None
    c.update_metadata(doc.ino, content_type="application/pdf")  # a metadata change
    note()
    c.unlink_document(doc.ino)
    note()
    again, _ = c.register(new(artifact_id="W2", basename="b.pdf", sha256=SHA_A,
                              source_url="https://x/again.pdf"))  # the same name again
    note()
    spare = c.make_directory(w2.parent_ino, "spare")
    c.set_directory_mtime(spare.ino, 123_000_000_000)
    note()
    c.remove_directory(spare.ino)
    note()
    view = store.open_catalog()
    try:
        for moment, expected in moments:
            view.show_at(moment)
            assert view.at == moment
            assert _tree(view) == expected, moment
        with pytest.raises(CatalogError):
            view.unlink_document(again.ino)
    finally:
        view.close()
    assert c.get_document(again.ino) == again  # the present is untouched


def test_relaxed_commits_are_commits_and_a_durable_one_counts(store: Store) -> None:
    """A bulk load's connection: relaxed commits are whole and seen by every other
    connection; make_commits_durable commits (a round, counted) and stays relaxed."""
    catalog = store.catalog
    catalog.relax_commits()
    doc, _ = catalog.register(new())
    other = store.open_catalog()
    try:
        assert other.get_document(doc.ino) == doc
        catalog.make_commits_durable()
        catalog.make_commits_durable()
        counters = {n: v for n, labels, v in other.counters() if not labels}
        assert counters["casfs_durability_rounds_total"] == 2
        second, _ = catalog.register(new(source_url="https://x/b.pdf", basename="b.pdf"))
        assert other.get_document(second.ino) == second
    finally:
        other.close()


def test_blobs_registered_since_a_moment_are_those_of_live_versions_begun_then(
        store: Store) -> None:
    """What a crash recovery checks for files a crash lost: the blobs of live
    versions that began at or after the moment, once each; not a closed version's."""
    store.catalog.register(new())
    time.sleep(0.01)
    moment = time.time()
    time.sleep(0.01)
    store.catalog.register(new(basename="b.pdf", source_url="https://x/b.pdf", sha256=SHA_B))
    store.catalog.register(new(basename="c.pdf", source_url="https://x/c.pdf", sha256=SHA_B))
    sha_c = "c" * 64
    store.catalog.register(new(basename="d.pdf", source_url="https://x/d.pdf", sha256=sha_c))
    store.catalog.register(new(basename="d.pdf", source_url="https://x/d.pdf", sha256=SHA_A))
    assert sorted(store.catalog.blobs_registered_since(moment)) == [SHA_A, SHA_B]
    assert store.catalog.blobs_registered_since(time.time() + 1) == []

