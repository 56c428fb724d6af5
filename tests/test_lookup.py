"""show, where, search and dedup-report on a small catalog built with `casfs put`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from casfs.records import NewDocument
from casfs.tools import cli


def casfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "casfs.tools", "--store", str(store), *args],
                          capture_output=True, text=True, check=False)


@pytest.fixture
def catalog(store_path: Path, tmp_path: Path) -> dict[str, bytes]:
    """Five documents: one blob shared three ways (with two content types)."""
    shared, other, big = b"%PDF shared" * 100, b"<html>landing</html>", b"x" * 50_000
    puts = [
        ("unpaywall", "W4415231876", "https://pub.example/a.pdf", shared, "a.pdf", "run-1"),
        ("crossref", "W4415231876", "https://doi.example/10.1/a", shared, "a.pdf", "run-1"),
        ("arxiv", "W4415231999", "https://arxiv.example/pdf/1", shared, "x.bin", "run-2"),
        ("unpaywall", "W4415231877", "https://pub.example/b.html", other, "b.html", "run-2"),
        ("unpaywall", "W5000000000", "https://big.example/big.pdf", big, "big.pdf", "run-2"),
    ]
    for resolver, artifact, url, data, name, run in puts:
        src = tmp_path / name
        src.write_bytes(data)
        assert cli.main(["--store", str(store_path), "put", str(src), "--resolver", resolver,
                         "--artifact", artifact, "--source-url", url, "--run-id", run]) == 0
    return {"shared": shared, "other": other, "big": big}


FIELDS = {"id", "artifact_id", "resolver", "source_url", "sha256", "bytes", "content_type",
          "path", "created_at", "run_id"}


def test_show_lists_an_artifact_across_resolvers(store_path: Path, catalog: dict) -> None:  # type: ignore[type-arg]
    result = casfs(store_path, "show", "W4415231876", "--json")
    records = json.loads(result.stdout)
    assert result.returncode == 0 and set(records[0]) >= FIELDS
    assert sorted(r["path"] for r in records) == ["/crossref/W4415231876/a.pdf",
                                                  "/unpaywall/W4415231876/a.pdf"]
    human = casfs(store_path, "show", "W4415231876")
    assert "/unpaywall/W4415231876/a.pdf" in human.stdout
    missing = casfs(store_path, "show", "W0")
    assert missing.returncode == 1 and "no documents" in missing.stderr


def test_where_takes_a_unique_prefix(store_path: Path, catalog: dict) -> None:  # type: ignore[type-arg]
    digest = hashlib.sha256(catalog["shared"]).hexdigest()
    for query in (digest, digest[:8], digest[:8].upper()):
        records = json.loads(casfs(store_path, "where", query, "--json").stdout)
        assert len(records) == 3 and {r["sha256"] for r in records} == {digest}
    short = casfs(store_path, "where", digest[:7])
    assert short.returncode == 2 and "8 to 64 hex digits" in short.stderr
    none = casfs(store_path, "where", "0" * 8)
    assert none.returncode == 1


def test_where_refuses_an_ambiguous_prefix(store_path: Path, tmp_path: Path) -> None:
    # Real contents sharing 8 hex digits are too costly to find: register two crafted
    # hashes straight into the catalog.
    from casfs.records import NewDocument
    from casfs.store import Store

    with Store.open(store_path) as store:
        for sha in ("abcdef01" + "0" * 56, "abcdef01" + "1" * 56):
            store.catalog.register(NewDocument(resolver="r", artifact_id="a", basename=sha,
                                               sha256=sha, bytes=1, storage_uri="file:///x"))
    result = casfs(store_path, "where", "abcdef01")
    assert result.returncode == 2 and "ambiguous" in result.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["--resolver", "unpaywall"], 3),
    (["--content-type", "application/pdf"], 3),
    (["--artifact", "W44152318*"], 3),
    (["--url", "doi.example"], 1),
    (["--run", "run-2"], 3),
    (["--min-size", "10k"], 1),
    (["--max-size", "1100"], 4),
    (["--resolver", "unpaywall", "--run", "run-2", "--max-size", "1k"], 1),
    (["--since", "2000-01-01"], 5),
    (["--until", "2000-01-01T00:00:00Z"], 0),
    (["--limit", "2"], 2),
])
def test_search_filters(store_path: Path, catalog: dict, args: list[str],  # type: ignore[type-arg]
                        expected: int) -> None:
    result = casfs(store_path, "search", *args, "--jsonl")
    lines = result.stdout.splitlines()
    assert len(lines) == expected
    assert result.returncode == (0 if expected else 1)
    assert all(set(json.loads(line)) >= FIELDS for line in lines)


def test_search_rejects_bad_sizes_and_times(store_path: Path) -> None:
    for args in (["--min-size", "lots"], ["--since", "last week"]):
        result = casfs(store_path, "search", *args)
        assert result.returncode == 2 and "search" in result.stderr


def test_dedup_report(store_path: Path, catalog: dict) -> None:  # type: ignore[type-arg]
    report = json.loads(casfs(store_path, "dedup-report", "--json").stdout)
    shared, other, big = (len(catalog[k]) for k in ("shared", "other", "big"))
    assert report["logical_bytes"] == 3 * shared + other + big
    assert report["physical_bytes"] == shared + other + big
    assert report["saved_bytes"] == 2 * shared
    assert report["dedup_ratio"] == pytest.approx(report["logical_bytes"] /
                                                  report["physical_bytes"], abs=1e-4)
    group = report["groups"][0]
    assert group["references"] == 3 and group["saved_bytes"] == 2 * shared
    assert sorted(group["paths"]) == ["/arxiv/W4415231999/x.bin", "/crossref/W4415231876/a.pdf",
                                      "/unpaywall/W4415231876/a.pdf"]
    saved = {r["resolver"]: r["saved_bytes"] for r in report["by_resolver"]}
    assert sum(saved.values()) == pytest.approx(2 * shared, abs=2)
    conflicts = report["anomalies"]["content_type_conflicts"]
    assert [c["sha256"] for c in conflicts] == [hashlib.sha256(catalog["shared"]).hexdigest()]
    human = casfs(store_path, "dedup-report", "--top", "1")
    assert "ratio" in human.stdout and "/arxiv/W4415231999/x.bin" in human.stdout


def test_history_follows_a_document_through_overwrites_renames_and_unlink(
        store_path: Path, tmp_path: Path) -> None:
    from casfs.store import Store

    src = tmp_path / "paper.pdf"
    put = ["put", str(src), "--resolver", "arxiv", "--artifact", "W1",
           "--source-url", "https://arxiv.example/1"]
    for content in (b"version one", b"version two"):
        src.write_bytes(content)
        assert casfs(store_path, *put).returncode == 0
    with Store.open(store_path) as store:
        doc = store.catalog.resolve_path("/arxiv/W1/paper.pdf")
        assert doc is not None
        target = store.catalog.ensure_directory("arxiv", "W2")
        store.catalog.rename_document(doc.ino, target, "renamed.pdf", replace=False)
        store.catalog.unlink_document(doc.ino)
    for path in ("/arxiv/W2/renamed.pdf", "/arxiv/W1/paper.pdf"):
        result = casfs(store_path, "history", path, "--json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        assert [r["change"] for r in rows] == ["overwrite", "rename", "unlink"]
        assert [r["path"] for r in rows] == ["/arxiv/W1/paper.pdf"] * 2 + [
            "/arxiv/W2/renamed.pdf"]
        assert rows[0]["sha256"] == hashlib.sha256(b"version one").hexdigest()
        assert all(r["blob"] == "present" for r in rows)
    human = casfs(store_path, "history", "/arxiv/W2/renamed.pdf")
    assert "(unlink)" in human.stdout and "/arxiv/W2/renamed.pdf" in human.stdout
    missing = casfs(store_path, "history", "/arxiv/W9/none.pdf")
    assert missing.returncode == 1 and "nothing was ever" in missing.stderr
    assert casfs(store_path, "history", "not/a/valid/path/x").returncode == 2


def test_lookups_at_a_past_moment_show_the_documents_and_paths_of_then(
        store_path: Path, tmp_path: Path) -> None:
    import time

    from casfs.moments import format_moment
    from casfs.store import Store

    with Store.open(store_path) as store:
        catalog = store.catalog
        catalog.register(NewDocument(
            resolver="unpaywall", artifact_id="W1", basename="a.pdf", sha256="a" * 64,
            bytes=1, storage_uri="u", source_url="https://x/a.pdf"))
        time.sleep(0.01)
        before = format_moment(time.time())
        time.sleep(0.01)
        catalog.register(NewDocument(
            resolver="unpaywall", artifact_id="W1", basename="a.pdf", sha256="b" * 64,
            bytes=2, storage_uri="u", source_url="https://x/a.pdf"))  # a new version
        w1 = catalog.find_directory("unpaywall", "W1")
        assert w1 is not None
        catalog.rename_directory(w1.ino, w1.parent_ino, "W2")
    then = json.loads(casfs(store_path, "search", "--at", before, "--json").stdout)
    assert [(d["path"], d["sha256"]) for d in then] == [("/unpaywall/W1/a.pdf", "a" * 64)]
    now = json.loads(casfs(store_path, "search", "--json").stdout)
    assert [(d["path"], d["sha256"]) for d in now] == [("/unpaywall/W2/a.pdf", "b" * 64)]
    assert json.loads(casfs(store_path, "show", "W1", "--at", before, "--json").stdout)[0][
        "sha256"] == "a" * 64
    assert casfs(store_path, "show", "W1", "--json").returncode == 1  # moved since
    assert casfs(store_path, "where", "a" * 12, "--at", before).returncode == 0
    assert casfs(store_path, "where", "a" * 12).returncode == 1  # no longer live
    history = json.loads(casfs(store_path, "history", "/unpaywall/W1/a.pdf", "--at", before,
                               "--json").stdout)
    assert [(v["sha256"][0], v["shown"]) for v in history] == [
        ("a", True), ("b", False), ("b", False)]
    bad = casfs(store_path, "search", "--at", "tomorrow")
    assert bad.returncode == 2 and "not a moment: 'tomorrow'" in bad.stderr
