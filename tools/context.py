"""What every subcommand gets: the resolved store directory and the config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from casfs.config import Config
from casfs.store import Store


@dataclass
class Context:
    store_path: Path
    config: Config
    store_given: bool  # --store (or CASFS_STORE) named it, rather than a default

    def open_store(self, *, readonly: bool = False) -> Store:
        return Store.open(self.store_path, readonly=readonly)
