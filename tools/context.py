"""What every subcommand gets: the resolved store directory and the config."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from casfs.config import Config
from casfs.store import Store


@dataclass
class Context:
    store_path: Path
    config: Config
    store_given: bool  # --store (or CASFS_STORE) named it, rather than a default

    def open_store(self, *, readonly: bool = False, recover: bool = True) -> Store:
        """The store; for a command that writes, first recovered from any mount that
        a crash ended (a bulk load, or a durable mount whose machine went down),
        before an import could take a damaged blob for a dedup hit. fsck passes
        recover=False: it reports that as a problem of its own."""
        from casfs import bulk_load  # not at import: most commands never need it
        store = Store.open(self.store_path, readonly=readonly)
        if not readonly and recover and bulk_load.unfinished(store.layout):
            try:
                for marker, report in bulk_load.recover_all(store):
                    print(f"casfs: recovered {bulk_load.describe(marker)}: "
                          f"{report.checked:,} blob(s) checked, {len(report.lost):,} lost "
                          "(moved to quarantine/, their records closed)", file=sys.stderr)
            except BaseException:
                store.close()
                raise
        return store
