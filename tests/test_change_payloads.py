"""Announcements of committed changes (casfs/catalog/changes.py): what a catalog
server's NOTIFY carries must decode to the same changes, once each, in order, in
payloads PostgreSQL accepts (under 8,000 bytes)."""

from __future__ import annotations

from casfs.catalog import changes
from casfs.catalog.changes import DirectoryChange, DocumentChange


def test_a_round_of_changes_comes_back_as_sent_once_each() -> None:
    sent: list[changes.Change] = [DocumentChange(7, "doi", "10.1/x", 'a "quoted" name\u00e9.pdf'),
            DirectoryChange(3, 1, "doi"), DocumentChange(7, "doi", "10.1/x",
                                                         'a "quoted" name\u00e9.pdf')]
    payloads = changes.encode("host-a", sent)
    assert len(payloads) == 1
    assert changes.decode(payloads[0]) == ("host-a", sent[:2])


def test_many_changes_are_split_into_payloads_the_server_accepts() -> None:
    sent = [DocumentChange(i, "r", "a" * 60, f"{i:05d}" + "b" * 120) for i in range(900)]
    payloads = changes.encode("host-a", sent)
    assert len(payloads) > 1
    assert all(len(p.encode()) < changes.MAX_PAYLOAD for p in payloads)
    received = [c for p in payloads for c in changes.decode(p)[1]]
    assert received == sent
    some = sent[:400]
    assert changes.encode("host-a", some + some) == changes.encode("host-a", some)
    too_many = [DocumentChange(i, "r", "a", "b") for i in range(changes.MAX_CHANGES + 1)]
    assert changes.encode("host-a", too_many) == []  # left to the cache timeout
