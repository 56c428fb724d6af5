"""What a committed transaction changed, told to other mounts (never needed for
correctness: mounts also see every change within their cache timeout).

A catalog collects the places its transaction touched, and after the commit a
backend that can tell other processes (PostgreSQL's NOTIFY) sends them, so that
mounts on other hosts drop the kernel's cached names and attributes at once. A
payload says who sent it, so that a mount skips its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

CHANNEL = "casfs_changes"
MAX_PAYLOAD = 7000  # PostgreSQL refuses payloads of 8000 bytes or more
MAX_CHANGES = 1000  # a bigger transaction (an import) is left to the cache timeout


class DocumentChange(NamedTuple):
    ino: int
    resolver: str
    artifact_id: str
    basename: str


class DirectoryChange(NamedTuple):
    ino: int
    parent_ino: int
    name: str


Change = DocumentChange | DirectoryChange


def encode(sender: str, changes: Sequence[Change]) -> list[str]:
    """Payloads of at most MAX_PAYLOAD bytes; none when there are too many changes."""
    if len(changes) > MAX_CHANGES:
        return []
    payloads: list[str] = []
    batch: list[str] = []
    size = 0
    head = '{"from": ' + json.dumps(sender) + ', "changes": ['
    for change in dict.fromkeys(changes):  # once each, in order
        item = json.dumps(["d" if isinstance(change, DocumentChange) else "t", *change])
        if batch and size + len(item) + 1 > MAX_PAYLOAD - 100:
            payloads.append(head + ", ".join(batch) + "]}")
            batch, size = [], 0
        if len(item) + 1 <= MAX_PAYLOAD - 100:
            batch.append(item)  # each change encoded once (a round's closes announce)
            size += len(item) + 1
    if batch:
        payloads.append(head + ", ".join(batch) + "]}")
    return payloads


def decode(payload: str) -> tuple[str, list[Change]]:
    """(sender, changes) of a payload; ValueError when it is not one of ours."""
    try:
        message = json.loads(payload)
        changes: list[Change] = []
        for kind, *fields in message["changes"]:
            changes.append(DocumentChange(*fields) if kind == "d" else DirectoryChange(*fields))
        return str(message["from"]), changes
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a change payload: {e}") from None
