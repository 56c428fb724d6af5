"""Configuration: where the store is and how a mount behaves.

Precedence, highest first: command-line options, environment (`CASFS_STORE`,
`CASFS_CONFIG`), the TOML config file, built-in defaults. The file lives under
`platformdirs.user_config_dir("casfs")` and is written by `casfs init`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from casfs.durations import format_duration, parse_duration
from casfs.errors import ConfigError
from casfs.records import GcPolicy, RetentionRule

APP = "casfs"


@dataclass(frozen=True)
class MountConfig:
    cache_timeout: float = 10.0
    """Seconds the kernel may cache names and attributes: the bound on how long a
    change made outside the mount (an import, another host) takes to show in it."""
    allow_other: bool = False


@dataclass(frozen=True)
class GcConfig:
    grace: float = 86400.0
    """Seconds a blob must have existed before gc may delete it (ingests in flight)."""
    keep_history: float = 30 * 86400.0
    """Seconds closed history (renamed, overwritten, deleted records) keeps its blobs."""
    retention: tuple[RetentionRule, ...] = ()

    def policy(self, *, grace: float | None = None,
               keep_history: float | None = None) -> GcPolicy:
        return GcPolicy(self.grace if grace is None else grace,
                        self.keep_history if keep_history is None else keep_history,
                        self.retention)


@dataclass(frozen=True)
class Config:
    store: Path | None = None
    mount: MountConfig = field(default_factory=MountConfig)
    gc: GcConfig = field(default_factory=GcConfig)
    path: Path | None = None  # the file this was read from, if any


_DURATION = (str, int, float)
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {"store": str},
    "mount": {"cache_timeout": (int, float), "allow_other": bool},
    "gc": {"grace": _DURATION, "keep_history": _DURATION, "retention": list},
}
_RULE_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "resolver": str, "content_type": str, "keep_history": _DURATION}


def config_path() -> Path:
    env = os.environ.get("CASFS_CONFIG")
    if env:
        return Path(env)
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def default_store_path() -> Path:
    return Path(platformdirs.user_data_dir(APP))


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file means defaults. Errors name the key."""
    path = path or config_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return Config()
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    _check(path, data)
    mount = MountConfig(**data.get("mount", {}))
    store = Path(data["store"]).expanduser() if "store" in data else None
    return Config(store=store, mount=mount, gc=_gc_config(path, data.get("gc", {})), path=path)


def _gc_config(path: Path, data: dict[str, Any]) -> GcConfig:
    def duration(key: str, value: Any) -> float:
        try:
            return parse_duration(value)
        except ConfigError as e:
            raise ConfigError(f"{path}: key '{key}': {e}") from None

    rules = []
    for i, rule in enumerate(data.get("retention", [])):
        where = f"gc.retention[{i}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{path}: {where} must be a table ([[gc.retention]])")
        for key, value in rule.items():
            _check_value(path, f"{where}.{key}", _RULE_SCHEMA.get(key), value)
        if "keep_history" not in rule or not ({"resolver", "content_type"} & rule.keys()):
            raise ConfigError(f"{path}: {where} needs keep_history and a resolver "
                              "or content_type to match")
        rules.append(RetentionRule(duration(f"{where}.keep_history", rule["keep_history"]),
                                   rule.get("resolver"), rule.get("content_type")))
    defaults = GcConfig()
    return GcConfig(
        grace=duration("gc.grace", data["grace"]) if "grace" in data else defaults.grace,
        keep_history=duration("gc.keep_history", data["keep_history"])
        if "keep_history" in data else defaults.keep_history,
        retention=tuple(rules))


def _check(path: Path, data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key in _SCHEMA and key != "":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{key}] must be a table")
            for sub, subvalue in value.items():
                _check_value(path, f"{key}.{sub}", _SCHEMA[key].get(sub), subvalue)
        else:
            _check_value(path, key, _SCHEMA[""].get(key), value)


def _check_value(path: Path, key: str, expected: type | tuple[type, ...] | None,
                 value: Any) -> None:
    if expected is None:
        raise ConfigError(f"{path}: unknown key '{key}'")
    bad_bool = isinstance(value, bool) and expected is not bool
    if bad_bool or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in (
            expected if isinstance(expected, tuple) else (expected,)))
        raise ConfigError(f"{path}: key '{key}' must be {names}, not {type(value).__name__}")


def resolve_store(option: str | os.PathLike[str] | None, config: Config) -> Path:
    """The store directory: --store, then CASFS_STORE, then the config file, then default."""
    if option:
        return Path(option).expanduser()
    env = os.environ.get("CASFS_STORE")
    if env:
        return Path(env).expanduser()
    if config.store is not None:
        return config.store
    return default_store_path()


def write_config(path: Path, config: Config) -> None:
    data: dict[str, Any] = {}
    if config.store is not None:
        data["store"] = str(config.store)
    data["mount"] = {"cache_timeout": config.mount.cache_timeout,
                     "allow_other": config.mount.allow_other}
    data["gc"] = {"grace": format_duration(config.gc.grace),
                  "keep_history": format_duration(config.gc.keep_history)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# casfs configuration (see README.md)\n" + tomli_w.dumps(data))
    tmp.replace(path)
