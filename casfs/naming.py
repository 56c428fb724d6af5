"""The one naming rule: how records and identifiers become path components.

Names that arrive from the mount are *checked* (a bad one is refused with an errno);
names that arrive from outside (a URL, a manifest, `casfs put`) are *sanitised* into
something the tree can show. Directory names are derived from identifiers
(resolver, artifact id) and stored beside them, so an identifier such as a DOI with a
`/` in it still gets a directory of its own.
"""

from __future__ import annotations

import errno
import hashlib
import re
import unicodedata
from urllib.parse import unquote, urlsplit

from casfs.errors import InvalidName

NAME_MAX = 255  # bytes, as on every Linux filesystem
RESERVED_ROOT_NAMES = frozenset({".casfs"})  # kept free for the store's own files
_UNESCAPE = {"%25": "%", "%2F": "/", "%2E": "."}
_ESCAPE = re.compile("|".join(_UNESCAPE))


def check_component(raw: bytes) -> str:
    """Validate a path component given to the mount and return it as text.

    Raises InvalidName with the errno the mount should answer.
    """
    if len(raw) > NAME_MAX:
        raise InvalidName(f"name is {len(raw)} bytes, over {NAME_MAX}", errno.ENAMETOOLONG)
    if raw in (b"", b".", b"..") or b"/" in raw or b"\0" in raw:
        raise InvalidName(f"invalid name {raw!r}", errno.EINVAL)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"name {raw!r} is not UTF-8", errno.EILSEQ) from None


def _fit(name: str, limit: int = NAME_MAX) -> str:
    """Shorten `name` to `limit` UTF-8 bytes, keeping a short extension."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = limit - len(suffix.encode())
    cut = stem.encode()[:budget].decode("utf-8", errors="ignore")
    return cut + suffix


def sanitize_basename(name: str) -> str | None:
    """Make an outside name safe for the tree, or None when nothing usable is left."""
    cleaned = "".join(
        "_" if ch in "/\\" or unicodedata.category(ch) == "Cc" else ch for ch in name
    ).strip()
    if cleaned in ("", ".", ".."):
        return None
    return _fit(cleaned)


def fallback_basename(url: str) -> str:
    """The seed's name for a file whose URL gives none: artifact_<md5(url)[:8]>.bin."""
    return f"artifact_{hashlib.md5(url.encode()).hexdigest()[:8]}.bin"


def basename_from_url(url: str) -> str:
    """The last path segment of `url`, without query or fragment, sanitised."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return fallback_basename(url)
    segment = unquote(path.rsplit("/", 1)[-1]) if path else ""
    return sanitize_basename(segment) or fallback_basename(url)


def dir_name_for(identifier: str) -> str:
    """The directory name that shows a resolver or an artifact id in the tree.

    Identifiers are kept verbatim in the catalog; only the path component is
    escaped: `%` as %25 and `/` as %2F, so that a DOI stays readable and distinct
    identifiers map to distinct names.
    """
    if not identifier or "\0" in identifier:
        raise InvalidName(f"invalid identifier {identifier!r}", errno.EINVAL)
    name = identifier.replace("%", "%25").replace("/", "%2F")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    if len(name.encode()) > NAME_MAX:
        digest = hashlib.sha256(identifier.encode()).hexdigest()[:12]
        name = _fit(name, NAME_MAX - 13) + "~" + digest
    return name


def identifier_for_dir_name(name: str) -> str:
    """The identifier a directory made through the mount stands for (the inverse rule)."""
    return _ESCAPE.sub(lambda m: _UNESCAPE[m.group(0)], name)


def collision_name(basename: str, discriminator: str) -> str:
    """A deterministic alternative for `basename` when another record holds that path.

    The suffix comes from the record itself (its source URL or hash), never from the
    order of arrival, so the same record always gets the same alternative name.
    """
    tag = hashlib.sha256(discriminator.encode()).hexdigest()[:8]
    stem, dot, ext = basename.rpartition(".")
    if not dot or not stem:
        return _fit(basename, NAME_MAX - 9) + "~" + tag
    suffix = f"~{tag}.{ext}"
    return _fit(stem, NAME_MAX - len(suffix.encode())) + suffix
