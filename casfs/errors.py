"""The exceptions casfs raises on purpose, each with the exit code a tool maps it to."""

from __future__ import annotations


class CasfsError(Exception):
    """A failure that a user can understand and act on.

    The message is shown as it is; `exit_code` follows the command-line contract
    (2: usage or environment errors, 1: problems found in the data).
    """

    exit_code = 2


class ConfigError(CasfsError):
    """The configuration file or an option is invalid (the message names the key)."""


class StoreError(CasfsError):
    """The store directory is missing, unreadable, or of an unknown format."""


class InvalidName(CasfsError):
    """A path component that casfs refuses: empty, `.`/`..`, `/`, NUL, too long, not UTF-8."""

    def __init__(self, message: str, errno_hint: int) -> None:
        super().__init__(message)
        self.errno_hint = errno_hint


class NotFound(CasfsError):
    """A record, directory or blob that was asked for does not exist."""


class Conflict(CasfsError):
    """The change would break a uniqueness rule (a live path or key already taken)."""


class UniqueViolation(Conflict):
    """A statement would have broken a unique index of the catalog (a backend raises
    it; the catalog's rules turn it into a collision name, a retry or a Conflict)."""


class CatalogError(CasfsError):
    """The catalog database failed (what the driver said is in the message)."""


class CatalogBusy(CatalogError):
    """A write transaction could not start: other writers kept the catalog locked for
    longer than the busy timeout. Nothing was changed; trying again is safe."""


class CatalogRace(CatalogError):
    """A write transaction lost a race with another writer (a deadlock broken by the
    server); nothing of it was committed, and running it again is safe."""


class CatalogFull(CatalogError):
    """The catalog's disk is full."""


class CatalogReadOnly(CatalogError):
    """A write to a catalog opened read-only (or on a read-only file or server)."""


class CatalogUnavailable(CatalogError):
    """The catalog's server cannot be reached now; a later call may work again."""


class BlobsMissing(CasfsError):
    """A registration found that blobs it needs are gone (removed by gc or quarantined
    after they were placed). The caller restores them from staging and tries again."""

    def __init__(self, sha256s: list[str]) -> None:
        super().__init__(f"{len(sha256s)} blob(s) vanished before registration")
        self.sha256s = sha256s


class UnreadableSource(CasfsError):
    """A file to be stored cannot be read (as opposed to the store failing to take it)."""

    def __init__(self, source: object, error: OSError) -> None:
        super().__init__(f"cannot read {source}: {error.strerror or error}")
        self.missing = isinstance(error, FileNotFoundError)
