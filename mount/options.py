"""`-o` mount options: what each means, parsed once, passed to the daemon as text.

Unknown options are an error that names them; the ones mount(8) and fstab pass
along that mean nothing here are ignored, so a casfs line in fstab works.
"""

from __future__ import annotations

from dataclasses import dataclass

from casfs.config import MountConfig
from casfs.errors import CasfsError
from casfs.moments import parse_moment

from . import readahead

DEFAULT_INTERVAL_S = 5.0  # -o durability_interval: seconds between durability rounds
DEFAULT_CATALOG_TIMEOUT_S = 30.0  # -o catalog_timeout: a catalog server's answer, at most

# Options that mount(8) and fstab pass along and that mean nothing to casfs.
_IGNORED = frozenset({"defaults", "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
                      "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail",
                      "atime", "noatime", "relatime", "strictatime", "nodiratime", "async"})


@dataclass(frozen=True)
class MountOptions:
    readonly: bool = False
    allow_other: bool = False
    cache_timeout: float = 10.0
    debug: bool = False
    metrics_port: int | None = None
    noxattr: bool = False
    nonotify: bool = False  # do not listen to the catalog's announcements of changes
    readahead_kib: int = readahead.DEFAULT_KIB
    at: float | None = None  # time travel: the moment shown, read-only
    durability: str = "close"  # or "batch": a bulk load (see durability_rounds.py)
    durability_interval: float = DEFAULT_INTERVAL_S
    passthrough: bool | None = None  # None: on for read-only mounts (passthrough.py)
    # Seconds a request waits for a catalog server before it fails with EIO (a server
    # that stopped answering would otherwise hang it, unkillably); None: no bound.
    catalog_timeout: float | None = DEFAULT_CATALOG_TIMEOUT_S

    @property
    def use_passthrough(self) -> bool:
        """Whether to ask the kernel to read blobs itself: asked with -o passthrough,
        refused with -o nopassthrough, by default on read-only mounts only (on a
        read-write mount a file being read that way cannot be opened for writing)."""
        return self.readonly if self.passthrough is None else self.passthrough

    @classmethod
    def parse(cls, option_strings: list[str], defaults: MountConfig) -> MountOptions:
        """Parse `-o` values (comma separated, repeatable); unknown options are an error."""
        values: dict[str, object] = {"cache_timeout": defaults.cache_timeout,
                                     "allow_other": defaults.allow_other}
        for option in (o.strip() for s in option_strings for o in s.split(",")):
            key, _, value = option.partition("=")
            if not option or key in _IGNORED or key.startswith(("x-", "comment")):
                continue
            if key == "ro":
                values["readonly"] = True
            elif key in ("allow_other", "debug", "noxattr", "nonotify"):
                values[key] = True
            elif key in ("passthrough", "nopassthrough"):
                values["passthrough"] = key == "passthrough"
            elif key == "cache_timeout":
                try:
                    values["cache_timeout"] = float(value)
                except ValueError:
                    raise CasfsError(f"-o cache_timeout needs seconds, got {value!r}") from None
            elif key == "readahead":
                values["readahead_kib"] = _kib(value)
            elif key == "durability":
                if value not in ("close", "batch"):
                    raise CasfsError(f"-o durability is close (the default: every close "
                                     f"durable) or batch (a bulk load), got {value!r}")
                values["durability"] = value
            elif key == "durability_interval":
                values["durability_interval"] = _interval(value)
            elif key == "catalog_timeout":
                values["catalog_timeout"] = _catalog_timeout(value)
            elif key == "at":
                values["at"], values["readonly"] = parse_moment(value), True
            elif key == "metrics_port":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise CasfsError(f"-o metrics_port needs a TCP port, got {value!r}")
                values["metrics_port"] = int(value)
            else:
                raise CasfsError(f"unknown mount option {option!r}")
        return cls(**values)  # type: ignore[arg-type]

    def to_strings(self) -> list[str]:
        out = [f"cache_timeout={self.cache_timeout:g}", f"readahead={self.readahead_kib}K"]
        if self.metrics_port is not None:
            out.append(f"metrics_port={self.metrics_port}")
        if self.durability != "close":
            out += [f"durability={self.durability}",
                    f"durability_interval={self.durability_interval:g}"]
        if self.passthrough is not None:
            out.append("passthrough" if self.passthrough else "nopassthrough")
        if self.catalog_timeout != DEFAULT_CATALOG_TIMEOUT_S:
            out.append(f"catalog_timeout={self.catalog_timeout or 0:g}")
        if self.at is not None:
            out.append(f"at=@{self.at!r}")  # exact; the log says it in ISO 8601 too
        out += [name for name, on in (("ro", self.readonly), ("allow_other", self.allow_other),
                                      ("debug", self.debug), ("noxattr", self.noxattr),
                                      ("nonotify", self.nonotify)) if on]
        return ["-o", ",".join(out)]


def _interval(value: str) -> float:
    """-o durability_interval=SECONDS: more than 0, at most an hour."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise CasfsError(f"-o durability_interval needs seconds (at most 3600), got {value!r}")
    return seconds


def _catalog_timeout(value: str) -> float | None:
    """-o catalog_timeout=SECONDS: more than 0, at most a day; 0 for no bound."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds == 0:
        return None
    if not 0 < seconds <= 86400:
        raise CasfsError(f"-o catalog_timeout needs seconds (0 for no bound, at most "
                         f"86400), got {value!r}")
    return seconds


def _kib(value: str) -> int:
    """-o readahead=SIZE: 1024K, 1M, 512 (KiB); 0 leaves the kernel's window."""
    units = {"K": 1, "M": 1024}
    number, unit = (value[:-1], value[-1].upper()) if value[-1:].upper() in units \
        else (value, "K")
    if not number.isdigit() or int(number) * units[unit] > 1 << 20:
        raise CasfsError(f"-o readahead needs a size such as 1M or 512K, got {value!r}")
    return int(number) * units[unit]
