"""The blob ledger and the counters: a mixin of SqlCatalog.

What verify, gc and fsck record about blobs (state, when verified, size) and the
counters behind the metrics. Methods documented "inside write_transaction" must be
called in one, so that they happen while no registration can commit.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from casfs.catalog.database import Database
from casfs.catalog.sql_queries import value_rows

_LIVE = "valid_to IS NULL"


class SqlBlobLedger:
    db: Database
    _counter_deltas: dict[tuple[str, str], int]

    def _write(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # provided by SqlCatalog

    def _ensure_blobs(self, sizes: dict[str, int]) -> None:
        """Record blobs ({sha256: size}) as present, in one statement."""
        if not sizes:
            return
        now = time.time()
        self.db.execute("INSERT INTO blobs (sha256, bytes, first_seen) "
                        f"VALUES {value_rows(3, len(sizes))} "
                        "ON CONFLICT (sha256) DO UPDATE SET state = 'present'",
                        [v for sha256, size in sorted(sizes.items()) for v in (sha256, size, now)])

    def set_blob_state(self, sha256: str, state: str) -> None:
        """Record a blob as present, quarantined or missing (inside write_transaction)."""
        self.db.execute("UPDATE blobs SET state = ? WHERE sha256 = ?", (state, sha256))

    def point_records_at(self, base: str) -> int:
        place = "CAST(? AS TEXT) || substr(sha256, 1, 2) || '/' || substr(sha256, 3)"
        with self._write():
            self.db.execute(f"UPDATE documents SET storage_uri = {place}", (base,))
            self.db.execute(f"UPDATE variants SET storage_uri = {place}", (base,))
            row = self.db.one("SELECT count(*) FROM documents")
        return int(row[0]) if row else 0

    def mark_verified(self, sha256s: list[str], when: float) -> None:
        with self._write():
            self.db.executemany("UPDATE blobs SET last_verified_at = ? WHERE sha256 = ?",
                                  [(when, sha) for sha in sha256s])

    def adopt_blob(self, sha256: str, size: int) -> None:
        """Record a blob file found without a row (fsck's repair of a stray blob)."""
        with self._write():
            self.db.execute(
                "INSERT INTO blobs (sha256, bytes, first_seen) VALUES (?, ?, ?) ON CONFLICT "
                "(sha256) DO UPDATE SET state = 'present', bytes = excluded.bytes",
                (sha256, size, time.time()))

    def correct_blob_size(self, sha256: str, size: int) -> None:
        with self._write():
            self.db.execute("UPDATE blobs SET bytes = ? WHERE sha256 = ?", (size, sha256))
            self.db.execute("UPDATE documents SET bytes = ? WHERE sha256 = ?",
                              (size, sha256))

    def close_records_of_blob(self, sha256: str, change: str) -> None:
        """Close every live record of a blob (inside write_transaction)."""
        self.db.execute(f"UPDATE documents SET valid_to = ?, change = ? "
                          f"WHERE sha256 = ? AND {_LIVE}", (time.time(), change, sha256))

    def blobs_registered_since(self, moment: float) -> list[str]:
        return [str(row[0]) for row in self.db.rows(
            f"SELECT DISTINCT sha256 FROM documents WHERE valid_from >= ? AND {_LIVE}",
            (moment,))]

    def _bump(self, name: str, labels: str, amount: int) -> None:
        """Add to a counter; written once per transaction by `_flush_counters`."""
        self._counter_deltas[(name, labels)] = \
            self._counter_deltas.get((name, labels), 0) + amount

    def _flush_counters(self) -> None:
        """Write the counters this transaction added to (just before it commits)."""
        deltas = self._take_counter_deltas()
        if deltas:
            self._write_counters(deltas)

    def _take_counter_deltas(self) -> dict[tuple[str, str], int]:
        """What this transaction added to the counters and has not written yet, now
        the caller's to write."""
        deltas, self._counter_deltas = self._counter_deltas, {}
        return deltas

    def _write_counters(self, deltas: dict[tuple[str, str], int]) -> None:
        """Add `deltas` to the counters table (the backend says how)."""
        raise NotImplementedError

    def bump_counter(self, name: str, amount: int = 1) -> None:
        """Add to a label-less counter (inside write_transaction)."""
        self._bump(name, "", amount)

    def add_to_counters(self, amounts: dict[str, int]) -> None:
        """Add to label-less counters, in a transaction of their own."""
        with self._write():
            for name, amount in amounts.items():
                if amount:
                    self._bump(name, "", amount)

    def counters(self) -> list[tuple[str, str, int]]:
        """Every counter as (name, label text, value)."""
        return [(n, labels, int(v)) for n, labels, v in self.db.rows(
            "SELECT name, labels, sum(value) FROM counters GROUP BY name, labels "
            "ORDER BY name, labels")]
