from pathlib import Path

import pytest

from casfs.config import Config, load_config, resolve_store
from casfs.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.toml") == Config()


def test_values_are_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.toml",
                               'store = "/srv/casfs"\n[mount]\ncache_timeout = 2\n'))
    assert config.store == Path("/srv/casfs") and config.mount.cache_timeout == 2


@pytest.mark.parametrize(("text", "message"), [
    ("store = [", "not valid TOML"),
    ("stor = '/x'\n", "unknown key 'stor'"),
    ("[mount]\ncache_timout = 1\n", "unknown key 'mount.cache_timout'"),
    ("[mount]\ncache_timeout = 'soon'\n", "key 'mount.cache_timeout' must be int or float"),
    ("[mount]\nallow_other = 1\n", "key 'mount.allow_other' must be bool"),
    ("mount = 3\n", r"\[mount\] must be a table"),
])
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "c.toml", text))


def test_store_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config(store=tmp_path / "from-config")
    assert resolve_store(None, config) == tmp_path / "from-config"
    monkeypatch.setenv("CASFS_STORE", str(tmp_path / "from-env"))
    assert resolve_store(None, config) == tmp_path / "from-env"
    assert resolve_store(str(tmp_path / "from-option"), config) == tmp_path / "from-option"


def test_gc_settings_and_retention_rules(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.toml", """
[gc]
grace = "90m"
keep_history = "7d"
[[gc.retention]]
resolver = "arxiv"
keep_history = "2w"
[[gc.retention]]
content_type = "text/html"
keep_history = 0
"""))
    assert config.gc.grace == 5400 and config.gc.keep_history == 7 * 86400
    assert [(r.resolver, r.content_type, r.keep_history) for r in config.gc.retention] == [
        ("arxiv", None, 14 * 86400), (None, "text/html", 0)]


@pytest.mark.parametrize(("text", "message"), [
    ("[gc]\ngrace = 'soon'\n", "key 'gc.grace': not a duration"),
    ("[[gc.retention]]\nresolver = 'x'\n", r"gc.retention\[0\] needs keep_history"),
    ("[[gc.retention]]\nkeep_history = '1d'\nresolvr = 'x'\n",
     r"unknown key 'gc.retention\[0\].resolvr'"),
])
def test_bad_gc_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path / "c.toml", text))


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0), ("90", 90), ("90m", 5400), ("12h", 43200), ("7d", 604800), ("1d12h", 129600),
])
def test_durations(text: str, seconds: float) -> None:
    from casfs.durations import parse_duration

    assert parse_duration(text) == seconds
