"""Time travel against a model: random sequences of writes, overwrites, renames,
directory renames and deletions, with the time of each step recorded. A view of
each recorded time equals the model's tree at that step, and `casfs diff` between
any two recorded times equals the model's difference (by inode: added, removed,
changed, renamed). On both catalogs."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from casfs.catalog import ROOT_INO, Catalog
from casfs.diff import differences
from casfs.errors import Conflict
from casfs.records import NewDocument, PathWrite
from casfs.store import Store

Model = dict[int, tuple[str, str, str]]  # ino -> (artifact, name, sha256)
NAMES = ["a.pdf", "b.pdf", "c.txt"]
ARTIFACTS = ["W1", "W2", "W3"]
SHAS = [c * 64 for c in "abcd"]

step = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(ARTIFACTS), st.sampled_from(NAMES),
              st.sampled_from(SHAS)),
    st.tuples(st.just("rename"), st.integers(0, 20), st.sampled_from(ARTIFACTS),
              st.sampled_from(NAMES)),
    st.tuples(st.just("unlink"), st.integers(0, 20)),
    st.tuples(st.just("rename_dir"), st.sampled_from(ARTIFACTS), st.sampled_from(ARTIFACTS)),
)


def apply(catalog: Catalog, model: Model, op: tuple[object, ...], inos: itertools.count[int]
          ) -> None:
    """One step on the catalog and on the model."""
    def at(artifact: str, name: str) -> int | None:
        return next((i for i, (a, n, _) in model.items() if (a, n) == (artifact, name)), None)

    kind = op[0]
    if kind == "write":
        _, artifact, name, sha = op
        assert isinstance(artifact, str) and isinstance(name, str) and isinstance(sha, str)
        directory = catalog.ensure_directory("r", artifact)
        ino = at(artifact, name) or next(inos)
        catalog.write_at_paths([PathWrite(ino, directory, name, NewDocument(
            resolver="r", artifact_id=artifact, basename=name, sha256=sha, bytes=1,
            storage_uri="u"))])
        model[ino] = (artifact, name, sha)
    elif kind == "rename" and model:
        _, pick, artifact, name = op
        assert isinstance(pick, int) and isinstance(artifact, str) and isinstance(name, str)
        ino = sorted(model)[pick % len(model)]
        catalog.rename_document(ino, catalog.ensure_directory("r", artifact), name,
                                replace=True)
        occupant = at(artifact, name)
        if occupant is not None and occupant != ino:
            del model[occupant]  # replaced
        model[ino] = (artifact, name, model[ino][2])
    elif kind == "unlink" and model:
        _, pick = op
        assert isinstance(pick, int)
        ino = sorted(model)[pick % len(model)]
        catalog.unlink_document(ino)
        del model[ino]
    elif kind == "rename_dir":
        _, source, target = op
        assert isinstance(source, str) and isinstance(target, str)
        directory = catalog.find_directory("r", source)
        if directory is None or catalog.find_directory("r", target) is not None:
            return
        try:
            catalog.rename_directory(directory.ino, directory.parent_ino, target)
        except Conflict:
            return
        for ino, (artifact, name, sha) in list(model.items()):
            if artifact == source:
                model[ino] = (target, name, sha)


def seen(catalog: Catalog) -> Model:
    """The documents a catalog shows, walked from the root as the mount walks them."""
    found: Model = {}
    for resolver in catalog.list_directories(ROOT_INO, 0, 100):
        for artifact in catalog.list_directories(resolver.ino, 0, 100):
            for doc in catalog.list_documents(artifact, 0, 100):
                found[doc.ino] = (artifact.name, doc.basename, doc.sha256)
    return found


def expected_diff(first: Model, second: Model) -> set[tuple[str, int]]:
    out = set()
    for ino in first.keys() | second.keys():
        if ino not in second:
            out.add(("removed", ino))
        elif ino not in first:
            out.add(("added", ino))
        elif first[ino][:2] != second[ino][:2]:
            out.add(("renamed", ino))
        elif first[ino][2] != second[ino][2]:
            out.add(("changed", ino))
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_views_and_diffs_of_recorded_moments_match_the_model(
        backend: str, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("postgres_server") if backend == "postgresql" else None

    @settings(max_examples=12, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(st.lists(step, min_size=1, max_size=12))
    def run(ops: list[tuple[object, ...]]) -> None:
        root: Path = tmp_path_factory.mktemp("model")
        catalog_url = server.url(server.create_database()) if server else None
        with Store.init(root / "store", catalog=catalog_url) as store:
            catalog = store.catalog
            inos = itertools.count(catalog.reserve_inos().start)
            model: Model = {}
            moments: list[tuple[float, Model]] = []
            for op in ops:
                apply(catalog, model, op, inos)
                time.sleep(0.002)
                moments.append((time.time(), dict(model)))
                time.sleep(0.002)
            views = []
            try:
                for moment, state in moments:
                    view = store.open_catalog()
                    views.append(view)
                    view.show_at(moment)
                    assert seen(view) == state
                for (i, a), (j, b) in itertools.product(enumerate(moments), repeat=2):
                    if i < j and (i + j) % 2 == 0:  # a sample of the pairs, both orders
                        got = {(d.kind, d.ino) for d in differences(views[i], views[j])}
                        assert got == expected_diff(a[1], b[1])
                        back = {(d.kind, d.ino) for d in differences(views[j], views[i])}
                        assert back == expected_diff(b[1], a[1])
            finally:
                for view in views:
                    view.close()

    run()
